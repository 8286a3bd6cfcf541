"""EnCodec interop: HF EncodecModel and AudioCraft / `encodec` package checkpoints <-> Codec, against the peers
built in the test with random weights (no downloads)."""

import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from encodec import EncodecModel as PackageEncodecModel
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import EncodecConfig, EncodecModel

from codec import Codec, CodecConfig, QuantizerConfig, SEANetConfig
from interop.encodec import (codec_config_from_audiocraft, codec_config_from_hf, codec_config_to_hf,
                             codec_state_from_audiocraft, codec_state_from_hf, codec_to_hf, convert_hf_encodec,
                             write_codec)
from interop.state import ConversionError, load_torch_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Tiny HF configs in the style of the two released codecs; 64 / 128 codes so codes are not all alike.
HF_24KHZ_STYLE = dict(  # causal, 1x1 conv shortcuts, 2-layer LSTM, reflect padding; hop 8, 6 kbps per codebook
    sampling_rate=8000, upsampling_ratios=[4, 2], num_filters=4, hidden_size=8, num_residual_layers=2,
    num_lstm_layers=2, codebook_size=64, target_bandwidths=[6.0, 12.0, 24.0], use_causal_conv=True,
    use_conv_shortcut=True, pad_mode="reflect",
)
HF_32KHZ_STYLE = dict(  # non-causal, identity shortcuts, zero padding; hop 20, 5.6 kbps per codebook, 4 codebooks
    sampling_rate=16000, upsampling_ratios=[5, 4], num_filters=4, hidden_size=8, num_residual_layers=1,
    num_lstm_layers=1, codebook_size=128, target_bandwidths=[22.4], use_causal_conv=False, use_conv_shortcut=False,
    pad_mode="constant",
)
# HF's convert_encodec_checkpoint_to_pytorch.py settings for facebook/encodec_32khz (MusicGen's codec).
HF_ENCODEC_32KHZ = dict(
    upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=64, sampling_rate=32000, codebook_size=2048,
    use_causal_conv=False, normalize=False, use_conv_shortcut=False,
)


def randomize_codebooks(codebooks, latents: torch.Tensor) -> None:
    """Reference codebooks start at zero: draw each level's codes from the residuals it sees (a random encoder's
    latents share a large offset, so codes drawn around zero would all pick one entry) and random statistics."""
    with torch.no_grad():
        residual = latents.transpose(1, 2).reshape(-1, latents.shape[1])  # [B * F, D]
        for codebook in codebooks:
            picks = torch.randint(0, residual.shape[0], (codebook.embed.shape[0],))
            spread = (residual - residual.mean(dim=0)).std()
            codebook.embed.copy_(residual[picks] + 0.1 * spread * torch.randn_like(codebook.embed))
            codebook.embed_avg.copy_(torch.randn_like(codebook.embed_avg))
            codebook.cluster_size.copy_(torch.rand_like(codebook.cluster_size))
            residual = residual - codebook.embed[torch.cdist(residual, codebook.embed).argmin(dim=-1)]


def fewest_distinct_codes(codes: torch.Tensor) -> int:
    """codes [B, K, F] -> the smallest number of distinct codes any codebook level uses."""
    return min(codes[:, k].unique().numel() for k in range(codes.shape[1]))


def hf_model(options: dict, wav: torch.Tensor) -> EncodecModel:
    model = EncodecModel(EncodecConfig(**options)).eval()
    with torch.no_grad():
        randomize_codebooks([layer.codebook for layer in model.quantizer.layers], model.encoder(wav))
    return model


def hf_codes_and_audio(model: EncodecModel, wav: torch.Tensor, kbps: float) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        encoded = model.encode(wav, bandwidth=kbps)
        codes = encoded.audio_codes[0]  # [B, K, F] (one chunk)
        return codes, model.decode(encoded.audio_codes, encoded.audio_scales).audio_values


def hop_multiple_wav(options: dict, frames: int, channels: int = 1) -> torch.Tensor:
    hop = 1
    for ratio in options["upsampling_ratios"]:
        hop *= ratio
    return 0.1 * torch.randn(2, channels, frames * hop)


@pytest.mark.parametrize("options", [HF_24KHZ_STYLE, HF_32KHZ_STYLE], ids=["24khz_style", "32khz_style"])
def test_hf_encodec_converts_to_the_same_codes_and_audio(options, tmp_path):
    wav = hop_multiple_wav(options, frames=40)
    reference = hf_model(options, wav)
    reference.save_pretrained(tmp_path / "hf")
    convert_hf_encodec(tmp_path / "hf", tmp_path / "ours")
    ours = Codec.load(tmp_path / "ours")
    for kbps in options["target_bandwidths"]:
        reference_codes, reference_audio = hf_codes_and_audio(reference, wav, kbps)
        with torch.no_grad():
            codes = ours.encode(wav, ours.bandwidth_to_num_codebooks(kbps))
            audio = ours.decode(codes)
        assert torch.equal(codes, reference_codes)
        assert fewest_distinct_codes(codes) >= 8  # every level is exercised, not one code everywhere
        assert (audio - reference_audio).abs().max() < 1e-5  # measured: 9e-8 .. 1.2e-7


def test_hf_weight_norm_legacy_names_and_prefix_give_the_same_state():
    wav = hop_multiple_wav(HF_24KHZ_STYLE, frames=8)
    weights = hf_model(HF_24KHZ_STYLE, wav).state_dict()
    config = codec_config_from_hf(EncodecConfig(**HF_24KHZ_STYLE).to_dict(), "test")
    state = codec_state_from_hf(weights, config, prefix="", source="test")
    legacy = {name.replace("parametrizations.weight.original0", "weight_g")
              .replace("parametrizations.weight.original1", "weight_v"): tensor for name, tensor in weights.items()}
    assert any(name.endswith("weight_g") for name in legacy)
    musicgen_like = {f"audio_encoder.{name}": tensor for name, tensor in weights.items()}
    musicgen_like["decoder.model.decoder.layers.0.fc1.weight"] = torch.zeros(2, 2)  # not the codec's: left alone
    for other in (codec_state_from_hf(legacy, config, prefix="", source="legacy"),
                  codec_state_from_hf(musicgen_like, config, prefix="audio_encoder.", source="musicgen")):
        assert other.keys() == state.keys()
        assert all(torch.equal(other[name], state[name]) for name in state)
    assert state["quantizer.codebooks.0.initialized"].dtype == torch.bool
    assert state["quantizer.codebooks.0.initialized"].shape == ()


def test_codec_to_hf_and_back_is_bit_identical(tmp_path):
    config = CodecConfig(
        sample_rate=8000, channels=2, bandwidths=(5.0, 10.0),
        seanet=SEANetConfig(dimension=8, n_filters=4, ratios=(4, 2), lstm_layers=1, pad_mode="replicate",
                            unit_norm_init=True),
        quantizer=QuantizerConfig(num_codebooks=2, codebook_size=32, ema_decay=0.9, kmeans_iters=3,
                                  dead_code_threshold=0.1, dead_code_mode="uniform_fraction", dropout=0.25),
    )
    codec = Codec(config).eval()
    wav = 0.1 * torch.randn(2, 2, 8 * 30)
    with torch.no_grad():
        for name, tensor in codec.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(0.5 * torch.randn_like(tensor))
        for k, codebook in enumerate(codec.quantizer.codebooks):
            codebook.codebook.mul_(codec.encoder(wav).std() / 0.5)
            codebook.usage.abs_()
            codebook.initialized.fill_(k == 0)  # both flag values survive
    codec.save(tmp_path / "ours")
    codec_to_hf(tmp_path / "ours", tmp_path / "hf")
    reference, loading = EncodecModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert all(not problems for problems in loading.values()), loading
    for kbps in config.bandwidths:
        reference_codes, reference_audio = hf_codes_and_audio(reference.eval(), wav, kbps)
        with torch.no_grad():
            codes = codec.encode(wav, codec.bandwidth_to_num_codebooks(kbps))
            assert torch.equal(codes, reference_codes)
            assert (codec.decode(codes) - reference_audio).abs().max() < 1e-5
    convert_hf_encodec(tmp_path / "hf", tmp_path / "back")
    assert (tmp_path / "back" / "config.json").read_text() == (tmp_path / "ours" / "config.json").read_text()
    before, after = (load_file(tmp_path / name / "model.safetensors") for name in ("ours", "back"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) and before[name].dtype == after[name].dtype for name in before)


PACKAGE_24KHZ_XP_CFG = """
sample_rate: 24000
channels: 1
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${sample_rate}
  channels: ${channels}
  causal: true
  renormalize: false
seanet:
  dimension: 128
  channels: ${channels}
  causal: ${encodec.causal}
  n_filters: 32
  n_residual_layers: 1
  ratios: [8, 5, 4, 2]
  activation: ELU
  activation_params: {"alpha": 1.}
  norm: weight_norm
  norm_params: {}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: reflect
  true_skip: false
  compress: 2
  lstm: 2
  disable_norm_outer_blocks: 0
  decoder:
    trim_right_ratio: 1.0
    final_activation: null
    final_activation_params: null
  encoder: {}
rvq:
  n_q: 32
  q_dropout: true
  bins: 1024
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
  orthogonal_reg_weight: 0.0
  orthogonal_reg_active_codes_only: false
"""


@pytest.mark.filterwarnings("ignore:.*weight_norm` is deprecated:FutureWarning")  # inside the encodec package
def test_encodec_package_state_in_audiocraft_layout_gives_the_same_codes_and_audio(tmp_path):
    reference = PackageEncodecModel.encodec_model_24khz(pretrained=False)  # causal, no input normalization
    wav = 0.1 * torch.randn(1, 1, 320 * 20)
    with torch.no_grad():
        randomize_codebooks([layer._codebook for layer in reference.quantizer.vq.layers], reference.encoder(wav))
    torch.save({"best_state": reference.state_dict(), "xp.cfg": PACKAGE_24KHZ_XP_CFG, "version": "1.3.0",
                "exported": True}, tmp_path / "compression_state_dict.bin")
    package = load_torch_file(tmp_path / "compression_state_dict.bin")
    config = codec_config_from_audiocraft(OmegaConf.create(package["xp.cfg"]), "package")
    assert (config.bandwidths, config.seanet.true_skip, config.quantizer.dropout) == ((24.0,), False, 1.0)
    write_codec(config, codec_state_from_audiocraft(package["best_state"], config, "package"), tmp_path / "ours")
    ours = Codec.load(tmp_path / "ours")
    reference.set_target_bandwidth(6.0)  # 8 codebooks
    with torch.no_grad():
        [(reference_codes, _)] = reference.encode(wav)
        codes = ours.encode(wav, num_codebooks=8)
        assert torch.equal(codes, reference_codes)
        assert fewest_distinct_codes(codes) >= 8
        assert (ours.decode(codes) - reference.decode([(reference_codes, None)])).abs().max() < 1e-5  # measured: 7e-8


def tiny_hf_weights() -> dict[str, torch.Tensor]:
    return EncodecModel(EncodecConfig(**HF_32KHZ_STYLE)).state_dict()


def test_an_unmapped_or_misshapen_weight_is_refused_by_name():
    config = codec_config_from_hf(HF_32KHZ_STYLE, "test")
    weights = tiny_hf_weights()
    with pytest.raises(ConversionError, match=r"encoder\.layers\.0\.bogus"):
        codec_state_from_hf({**weights, "encoder.layers.0.bogus": torch.zeros(1)}, config, "", "test")
    weights["quantizer.layers.1.codebook.embed"] = torch.zeros(128, 7)
    with pytest.raises(ConversionError, match=r"quantizer\.codebooks\.1\.codebook \(128, 7\) != \(128, 8\)"):
        codec_state_from_hf(weights, config, "", "test")


@pytest.mark.parametrize("option,value", [
    ("normalize", True), ("norm_type", "time_group_norm"), ("codebook_dim", 4), ("trim_right_ratio", 0.5),
    ("chunk_length_s", 1.0), ("pad_mode", "circular"), ("target_bandwidths", [1.0]),
])
def test_hf_options_codeclm_lacks_are_refused_by_name(option, value):
    options = {**HF_24KHZ_STYLE, option: value}
    with pytest.raises(ConversionError, match=re.escape(f"{option}={value!r}")):
        codec_config_from_hf(options, "test")


@pytest.mark.parametrize("seanet,quantizer,option", [
    (dict(activation="snake"), {}, "seanet.activation='snake'"),
    (dict(final_tanh=True), {}, "seanet.final_tanh=True"),
    (dict(lstm_layers=0), {}, "seanet.lstm_layers=0"),
    ({}, dict(lookup="factorized"), "quantizer.lookup='factorized'"),
    ({}, dict(codebook_size=48), "quantizer.codebook_size=48"),
])
def test_codec_options_hf_lacks_are_refused_by_name(seanet, quantizer, option):
    config = CodecConfig(sample_rate=8000, bandwidths=(5.0,), seanet={"n_filters": 4, "dimension": 8, "ratios": (4, 2),
                                                                       **seanet},
                         quantizer={"num_codebooks": 1, "codebook_size": 32, **quantizer})
    with pytest.raises(ConversionError, match=re.escape(option)):
        codec_config_to_hf(config)


@pytest.mark.parametrize("section,option,value", [
    ("encodec", "renormalize", True), ("seanet", "norm", "time_group_norm"), ("seanet", "activation", "SiLU"),
    ("seanet", "disable_norm_outer_blocks", 1), ("rvq", "orthogonal_reg_weight", 0.1),
    ("seanet", "trim_right_ratio", 0.5), ("seanet", "new_option", 1),
])
def test_audiocraft_options_codeclm_lacks_are_refused_by_name(section, option, value):
    xp_cfg = OmegaConf.create(PACKAGE_24KHZ_XP_CFG)
    if option == "trim_right_ratio":
        xp_cfg.seanet.decoder.trim_right_ratio = value
    else:
        xp_cfg[section][option] = value
    with pytest.raises(ConversionError, match=option):
        codec_config_from_audiocraft(xp_cfg, "test")


def test_musicgen_32khz_preset_is_hf_encodec_32khz():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        preset = CodecConfig(**compose(config_name=None, overrides=["+codec=musicgen_32khz"]).codec)
    reference_config = EncodecConfig(**HF_ENCODEC_32KHZ)
    assert asdict(codec_config_from_hf(reference_config.to_dict(), "encodec_32khz")) == asdict(preset)
    with torch.device("meta"):
        ours, reference = Codec(preset), EncodecModel(reference_config)
    count = sum(parameter.numel() for parameter in ours.parameters())
    assert count == sum(parameter.numel() for parameter in reference.parameters()) == 56_884_674
