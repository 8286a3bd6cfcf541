"""The presets in configs/codec/: exact sizes against the `encodec` package, rates, and the Hydra mapping."""

from pathlib import Path

import pytest
import torch
from encodec import EncodecModel
from hydra import compose, initialize_config_dir

from codec import Codec, CodecConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def preset(name: str) -> Codec:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        config = compose(config_name=None, overrides=[f"+codec={name}"])
    return Codec(CodecConfig(**config.codec))


def trainable(module) -> int:
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


@pytest.mark.filterwarnings("ignore:.*weight_norm` is deprecated:FutureWarning")  # inside the encodec package
def test_encodec_24khz_matches_the_encodec_package():
    ours = preset("encodec_24khz")
    peer = EncodecModel.encodec_model_24khz(pretrained=False)
    assert trainable(ours.encoder) == trainable(peer.encoder) == 7_425_792
    assert trainable(ours.decoder) == trainable(peer.decoder) == 7_426_018
    assert trainable(ours.quantizer) == trainable(peer.quantizer) == 0  # EMA codebooks are buffers
    assert ours.hop_length == peer.encoder.hop_length == 320
    assert ours.frame_rate == peer.frame_rate == 75
    assert ours.num_codebooks == peer.quantizer.n_q == 32
    assert [ours.bandwidth_to_num_codebooks(kbps) for kbps in peer.target_bandwidths] == [2, 4, 8, 16, 32]


@pytest.mark.parametrize(
    "name,sample_rate,frame_rate,num_codebooks,cardinality,max_kbps",
    [
        ("encodec_24khz", 24000, 75, 32, 1024, 24.0),
        ("musicgen_32khz", 32000, 50, 4, 2048, 2.2),
        ("dac_like", 24000, 75, 32, 1024, 24.0),
        ("tiny", 24000, 75, 4, 256, 2.4),
    ],
)
def test_preset_rates(name, sample_rate, frame_rate, num_codebooks, cardinality, max_kbps):
    codec = preset(name)
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.cardinality) == (
        sample_rate, frame_rate, num_codebooks, cardinality,
    )
    assert codec.bandwidth_to_num_codebooks(max_kbps) == num_codebooks
    assert max(codec.config.bandwidths) == pytest.approx(max_kbps)


def test_dac_like_uses_snake_and_learned_factorized_codes():
    codec = preset("dac_like")
    assert codec.config.quantizer.lookup == "factorized" and codec.config.quantizer.dropout == 0.5
    snake_alphas = [name for name, _ in codec.named_parameters() if name.endswith(".alpha")]
    assert len(snake_alphas) > 0
    assert all(codebook.codebook.requires_grad for codebook in codec.quantizer.codebooks)


def test_config_typo_is_refused():
    with pytest.raises(TypeError, match="n_filter"):
        CodecConfig(seanet=dict(n_filter=8))
    with pytest.raises(ValueError, match="activation"):
        CodecConfig(seanet=dict(activation="relu"))


def encodec_name_to_ours(name: str) -> str:
    """encodec package state-dict name -> codeclm name (same layer order; old vs parametrized weight norm)."""
    name = name.replace(".model.", ".layers.")
    for conv in ("conv", "convtr"):
        name = name.replace(f".{conv}.{conv}.weight_g", f".{conv}.parametrizations.weight.original0")
        name = name.replace(f".{conv}.{conv}.weight_v", f".{conv}.parametrizations.weight.original1")
        name = name.replace(f".{conv}.{conv}.bias", f".{conv}.bias")
    return name


@pytest.mark.filterwarnings("ignore:.*weight_norm` is deprecated:FutureWarning")
def test_encodec_24khz_computes_what_the_encodec_package_computes():
    peer = EncodecModel.encodec_model_24khz(pretrained=False)
    peer.set_target_bandwidth(24.0)
    ours = preset("encodec_24khz").eval()
    weights = {
        encodec_name_to_ours(name): tensor
        for name, tensor in peer.state_dict().items()
        if not name.startswith("quantizer.")
    }
    missing, unexpected = ours.load_state_dict(weights, strict=False)
    assert unexpected == [] and all(name.startswith("quantizer.") for name in missing)
    for k, layer in enumerate(peer.quantizer.vq.layers):  # the peer's codebooks are zeros until trained
        layer._codebook.embed.copy_(torch.randn(1024, 128))
        ours.quantizer.codebooks[k].codebook.copy_(layer._codebook.embed)
    wav = 0.1 * torch.randn(1, 1, 2400)
    with torch.no_grad():
        torch.testing.assert_close(ours.encoder(wav), peer.encoder(wav), atol=1e-5, rtol=0)
        [(peer_codes, _)] = peer.encode(wav)
        codes = ours.encode(wav)
        assert torch.equal(codes, peer_codes)
        torch.testing.assert_close(ours.decode(codes), peer.decode([(peer_codes, None)]), atol=1e-5, rtol=0)
