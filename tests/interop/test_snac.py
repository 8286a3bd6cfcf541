"""SNAC interop: snac directories (config.json + pytorch_model.bin) -> SNACCodec, against `snac.SNAC` built in the
test with random weights (no downloads), and the snac_24khz preset against SNAC's 24 kHz architecture."""

import inspect
import json
import re
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from codec.snac import SNACCodec, SNACConfig
from interop.convert import detect_format
from interop.convert import main as convert_main
from interop.snac import SNAC_DEFAULTS, codec_state_from_snac, convert_snac, snac_config_from_kwargs
from interop.state import ConversionError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # snac scripts its Snake with torch.jit.script
    import snac

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# hubertsiuzdak/snac_24khz's config.json (the SNAC README: 0.98 kbps, 19.8 M parameters, speech).
SNAC_24KHZ = dict(sampling_rate=24000, encoder_dim=48, encoder_rates=[2, 4, 8, 8], decoder_dim=1024,
                  decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=4096, codebook_dim=8,
                  vq_strides=[4, 2, 1], noise=True, depthwise=True)
# Small SNACs: every option on (local attention, depthwise, noise; an odd stride; four strides), and every option
# off with SNAC 24 kHz's three strides.
SNAC_SMALL = dict(sampling_rate=16000, encoder_dim=16, encoder_rates=[2, 3], latent_dim=64, decoder_dim=64,
                  decoder_rates=[3, 2], attn_window_size=4, codebook_size=64, codebook_dim=4, vq_strides=[8, 4, 2, 1],
                  noise=True, depthwise=True)
SNAC_SMALL_PLAIN = dict(sampling_rate=24000, encoder_dim=8, encoder_rates=[2, 4], decoder_dim=64,
                        decoder_rates=[4, 2], attn_window_size=None, codebook_size=64, codebook_dim=4,
                        vq_strides=[4, 2, 1], noise=False, depthwise=False)


def random_snac(**kwargs) -> snac.SNAC:
    """snac.SNAC with its own init, plus random Snake frequencies, biases and layer-norm gains (SNAC starts them
    at 1, 0 and 1, where a wrong mapping between layers would not show), in eval mode. The quantizers' input
    biases stay 0 so that the random latents spread over many codes."""
    torch.manual_seed(0)
    model = snac.SNAC(**kwargs)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".alpha") or name.endswith("norm.weight"):
                parameter.uniform_(0.5, 2.0)
            elif name.endswith(".bias") and ".in_proj." not in name:
                parameter.normal_(0.0, 0.05)
    return model.eval()


def write_snac_directory(directory: Path, model: snac.SNAC, kwargs: dict, state: dict | None = None) -> Path:
    """What the snac_* repositories hold: the constructor's kwargs as config.json, the state dict as a .bin."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(kwargs))
    torch.save(model.state_dict() if state is None else state, directory / "pytorch_model.bin")
    return directory


def assert_computes_what_snac_computes(ours: SNACCodec, peer: snac.SNAC, wav: torch.Tensor) -> None:
    """Same codes; same audio within 1e-5 when the noise blocks draw from the same seed (decode and forward)."""
    with torch.no_grad():
        peer_codes, codes = peer.encode(wav), ours.encode(wav)
        torch.manual_seed(1)
        peer_wav = peer.decode(peer_codes)
        torch.manual_seed(1)
        decoded = ours.decode(codes)
        torch.manual_seed(2)
        peer_reconstruction, _ = peer(wav)
        torch.manual_seed(2)
        reconstruction = ours(wav).wav
    assert len(codes) == len(peer_codes)
    for level, peer_level in zip(codes, peer_codes):
        assert torch.equal(level, peer_level)
        assert level.unique().numel() > 1  # codes vary: a real comparison
    assert codes[-1].unique().numel() > 4
    assert decoded.shape == peer_wav.shape
    torch.testing.assert_close(decoded, peer_wav, atol=1e-5, rtol=0)
    torch.testing.assert_close(reconstruction, peer_reconstruction, atol=1e-5, rtol=0)
    assert reconstruction.shape == wav.shape
    assert peer_wav.std() > 0.01


def preset(name: str) -> SNACConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        codec = compose(config_name=None, overrides=[f"+codec={name}"]).codec
    return SNACConfig(**OmegaConf.to_container(codec, resolve=True))


@pytest.mark.parametrize("kwargs", [SNAC_SMALL, SNAC_SMALL_PLAIN], ids=["attention_noise_depthwise", "plain"])
def test_a_converted_snac_directory_computes_the_same_codes_and_audio(tmp_path, kwargs):
    peer = random_snac(**kwargs)
    source = write_snac_directory(tmp_path / "snac", peer, kwargs)
    assert detect_format(source) == "snac"
    convert_main([str(source), "--out", str(tmp_path / "codec")])
    ours = SNACCodec.load(tmp_path / "codec")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in peer.parameters())
    torch.manual_seed(3)
    for length in (ours.config.samples_multiple * 8, ours.config.samples_multiple * 8 - 37):  # one SNAC pads
        assert_computes_what_snac_computes(ours, peer, 0.5 * torch.randn(2, 1, length))


def test_code_lengths_are_a_quarter_a_half_and_all_of_the_latent_frames():
    """Strides 4, 2, 1 and hop 8: 1,000 samples are padded to 1,024 (a multiple of 8 * 4), 128 latent frames."""
    ours = SNACCodec(snac_config_from_kwargs(SNAC_SMALL_PLAIN, "small")).eval()
    assert [level.shape[-1] for level in ours.encode(torch.randn(1, 1, 1000))] == [32, 64, 128]


def test_snac_24khz_is_snacs_24khz_model():
    """The preset's parameters equal snac.SNAC's 24 kHz model's (19.8 M); its converted weights give the same
    codes and audio on 0.17 s."""
    peer = random_snac(**SNAC_24KHZ)
    config = snac_config_from_kwargs(SNAC_24KHZ, "snac 24khz")
    assert asdict(preset("snac_24khz")) == asdict(config)
    ours = SNACCodec(config)
    ours.load_state_dict(codec_state_from_snac(peer.state_dict(), config, "snac 24khz"))
    ours.eval()
    num_parameters = sum(p.numel() for p in peer.parameters())
    assert sum(p.numel() for p in ours.parameters()) == num_parameters == 19_842_914
    torch.manual_seed(3)
    assert_computes_what_snac_computes(ours, peer, 0.5 * torch.randn(2, 1, 4096))


def test_the_tiny_preset_shares_the_24khz_token_rates():
    tiny, full = SNACCodec(preset("snac_tiny")), preset("snac_24khz")
    assert (tiny.hop_length, tiny.strides, tiny.sample_rate) == (full.hop_length, full.quantizer.strides, 24000)
    assert sum(p.numel() for p in tiny.parameters()) < 1_000_000


def test_a_misspelled_snac_key_fails_at_compose_time_naming_it():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ValidationError), match="encoder_dims"):
            compose(config_name=None, overrides=["+codec=snac_tiny", "codec.encoder_dims=8"])


def test_legacy_weight_norm_names_convert_the_same():
    """Older torch weight norm stores `weight_g` / `weight_v`; they are the parametrization's original0 / original1."""
    peer = random_snac(**SNAC_SMALL_PLAIN)
    config = snac_config_from_kwargs(SNAC_SMALL_PLAIN, "small")
    modern = codec_state_from_snac(peer.state_dict(), config, "small")
    legacy_state = {re.sub(r"parametrizations\.weight\.original([01])", lambda m: ("weight_g", "weight_v")[int(m[1])],
                           name): tensor for name, tensor in peer.state_dict().items()}
    assert any(name.endswith("weight_g") for name in legacy_state)
    legacy = codec_state_from_snac(legacy_state, config, "small")
    assert legacy.keys() == modern.keys()
    assert all(torch.equal(legacy[name], modern[name]) for name in modern)


@pytest.mark.parametrize("changes,match", [
    ({"use_lstm": True}, r"options codeclm does not know: \['use_lstm'\]"),
    ({"latent_dim": 48}, "latent_dim=48"),
    ({"decoder_rates": [2, 2]}, "decoder_rates"),
    ({"attn_window_size": 4, "encoder_dim": 4}, "multiple of head_dim"),
])
def test_options_codeclm_does_not_have_are_refused_by_name(changes, match):
    with pytest.raises(ConversionError, match=match):
        snac_config_from_kwargs(SNAC_SMALL_PLAIN | changes, "snac")


def test_missing_options_take_snacs_defaults():
    """SNAC_DEFAULTS are snac.SNAC's arguments and defaults, so a short config.json reads as snac reads it."""
    parameters = inspect.signature(snac.SNAC).parameters
    assert {name: parameter.default for name, parameter in parameters.items()} == SNAC_DEFAULTS
    config = snac_config_from_kwargs({"vq_strides": [4, 2, 1]}, "snac")
    assert (config.sample_rate, config.encoder_rates, config.attention_window, config.quantizer.strides) == (
        44100, (3, 3, 7, 7), 32, (4, 2, 1))


def test_a_weight_with_no_counterpart_or_a_missing_one_is_refused_naming_it():
    state = dict(random_snac(**SNAC_SMALL).state_dict())
    config = snac_config_from_kwargs(SNAC_SMALL, "snac")
    extra = "encoder.block.9.bias"
    with pytest.raises(ConversionError, match=f"no counterpart in codeclm: {re.escape(extra)}$"):
        codec_state_from_snac(state | {extra: torch.zeros(1)}, config, "snac")
    missing = dict(state)
    del missing["decoder.model.0.bias"]
    with pytest.raises(ConversionError, match=r"missing \['decoder\.input_convs\.0\.bias'\]"):
        codec_state_from_snac(missing, config, "snac")
    inv_freq = "encoder.block.3.rel_pos.inv_freq"
    with pytest.raises(ConversionError, match=re.escape(inv_freq)):
        codec_state_from_snac(state | {inv_freq: 2 * state[inv_freq]}, config, "snac")


def test_cli_refuses_a_directory_without_weights_and_leaves_nothing(tmp_path, capsys):
    source = tmp_path / "snac"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(SNAC_SMALL_PLAIN))
    with pytest.raises(SystemExit) as exit_info:
        convert_main([str(source), "--out", str(tmp_path / "codec")])
    assert exit_info.value.code == 1
    assert "pytorch_model.bin not found" in capsys.readouterr().err
    assert not (tmp_path / "codec").exists()
    with pytest.raises(ConversionError, match="not a SNAC config"):
        (source / "config.json").write_text(json.dumps({"sampling_rate": 24000}))
        (source / "pytorch_model.bin").write_bytes(b"")
        convert_snac(source, tmp_path / "codec")


def test_save_and_load_round_trip(tmp_path):
    config = snac_config_from_kwargs(SNAC_SMALL, "snac")
    model = SNACCodec(config).eval()
    model.save(tmp_path)
    loaded = SNACCodec.load(tmp_path)
    assert asdict(loaded.config) == asdict(config)
    wav = torch.randn(1, 1, 1000)
    assert all(torch.equal(a, b) for a, b in zip(model.encode(wav), loaded.encode(wav)))
