"""Codec backends: the `time_major` inference copy encodes and decodes as the reference codec does, offline and
streaming, leaves the reference untouched, and refuses what it does not support."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from codec import Codec, CodecConfig
from codec.backends.config import CodecBackendConfig, with_backend
from codec.backends.quantizer import PrecomputedNormQuantizer
from codec.backends.time_major import TimeMajorDecoder, TimeMajorEncoder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TIME_MAJOR = CodecBackendConfig(kind="time_major")
TOLERANCE = 1e-5  # float rounding of a different summation order; a wrong layout or weight is off by ~1e-1
CHUNKINGS = [[1] * 12, [3, 1, 5, 3], [2, 7, 3], [12]]  # frames per chunk; 12 frames in all

# Small codecs that cover every branch of the backend; "encodec_24khz" is the preset itself (CodecConfig defaults).
CONFIGS_BY_NAME = {
    "encodec_24khz": dict(),
    "tiny": dict(  # configs/codec/tiny.yaml
        seanet=dict(dimension=32, n_filters=8, ratios=(4, 4, 4, 5), lstm_layers=1, pad_mode="constant",
                    unit_norm_init=True),
        quantizer=dict(num_codebooks=4, codebook_size=256),
    ),
    "snake_true_skip_non_causal_dilated": dict(
        seanet=dict(dimension=16, n_filters=4, ratios=(3, 2), n_residual_layers=2, dilation_base=3, lstm_layers=0,
                    activation="snake", causal=False, true_skip=True, final_tanh=True),
        quantizer=dict(num_codebooks=3, codebook_size=32),
    ),
    "replicate_two_lstm_layers": dict(
        seanet=dict(dimension=16, n_filters=4, ratios=(4, 5), lstm_layers=2, pad_mode="replicate"),
        quantizer=dict(num_codebooks=3, codebook_size=32),
    ),
    "istft_decoder": dict(  # configs/codec/tiny_istft.yaml, narrower
        seanet=dict(dimension=16, n_filters=4, ratios=(4, 4, 5), lstm_layers=1, pad_mode="constant"),
        decoder=dict(kind="istft", width=16, intermediate_width=8, num_blocks=1),
        quantizer=dict(num_codebooks=3, codebook_size=32),
    ),
}
STREAMING = ["tiny", "replicate_two_lstm_layers", "istft_decoder"]


def make_codec(name: str) -> Codec:
    torch.manual_seed(0)
    codec = Codec(CodecConfig(**CONFIGS_BY_NAME[name])).eval()
    with torch.no_grad():  # snake's alpha away from its init of 1, so a wrongly laid out alpha shows
        for module in codec.modules():
            if hasattr(module, "alpha") and isinstance(module.alpha, torch.nn.Parameter):
                module.alpha.uniform_(0.5, 2.0)
    return codec


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS_BY_NAME))
def test_time_major_codec_encodes_and_decodes_as_the_reference(name):
    codec = make_codec(name)
    fast = with_backend(codec, TIME_MAJOR)
    wav = 0.1 * torch.randn(2, 1, 6 * codec.hop_length + 37)  # not a whole number of frames: extra padding
    with torch.no_grad():
        latents = codec.encoder(wav)
        assert max_error(fast.encoder(wav), latents) <= TOLERANCE
        codes = codec.encode(wav)
        assert torch.equal(fast.encode(wav), codes)
        assert torch.equal(fast.encode(wav, num_codebooks=2), codes[:, :2])
        assert max_error(fast.quantizer.decode(codes), codec.quantizer.decode(codes)) <= TOLERANCE
        assert max_error(fast.decode(codes), codec.decode(codes)) <= TOLERANCE
        assert max_error(fast.decode(codes[:, :2]), codec.decode(codes[:, :2])) <= TOLERANCE


@pytest.mark.parametrize("name", STREAMING)
def test_time_major_codec_streams_as_the_reference_decodes_offline(name):
    codec = make_codec(name)
    fast = with_backend(codec, TIME_MAJOR)
    wav = 0.1 * torch.randn(2, 1, 12 * codec.hop_length) + 0.05  # offset: replicate and constant padding differ
    with torch.no_grad():
        codes = codec.encode(wav)
        decoded = codec.decode(codes)
        for frames in CHUNKINGS:
            with fast.streaming(batch_size=2):
                pieces = torch.split(wav, [n * codec.hop_length for n in frames], dim=-1)
                streamed_codes = torch.cat([fast.encode(piece) for piece in pieces], dim=-1)
            with fast.streaming(batch_size=2):
                streamed_wav = torch.cat([fast.decode(piece) for piece in torch.split(codes, frames, -1)], -1)
            assert torch.equal(streamed_codes, codes), frames
            assert max_error(streamed_wav, decoded) <= TOLERANCE, frames


def test_the_reference_path_is_the_codec_itself_and_the_copy_leaves_it_unchanged():
    codec = make_codec("tiny")
    before = {name: tensor.clone() for name, tensor in codec.state_dict().items()}
    assert with_backend(codec, CodecBackendConfig()) is codec
    fast = with_backend(codec, TIME_MAJOR)
    assert isinstance(fast.encoder, TimeMajorEncoder) and isinstance(fast.decoder, TimeMajorDecoder)
    assert isinstance(fast.quantizer, PrecomputedNormQuantizer)
    assert not any(parameter.requires_grad for parameter in fast.parameters())
    assert type(codec.encoder).__name__ == "SEANetEncoder"
    for name, tensor in codec.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_factorized_codebooks_keep_the_reference_quantizer():
    codec = Codec(CodecConfig(**CONFIGS_BY_NAME["tiny"] | dict(quantizer=dict(
        num_codebooks=2, codebook_size=32, lookup="factorized")))).eval()
    fast = with_backend(codec, TIME_MAJOR)
    assert fast.quantizer is not codec.quantizer and type(fast.quantizer) is type(codec.quantizer)
    wav = 0.1 * torch.randn(1, 1, 4 * codec.hop_length)
    with torch.no_grad():
        assert torch.equal(fast.encode(wav), codec.encode(wav))


def test_a_bad_backend_kind_is_refused_naming_it():
    with pytest.raises(ValueError, match="kind must be one of .*'fast'"):
        CodecBackendConfig(kind="fast")


def test_dac_padding_is_refused_naming_it():
    codec = Codec(CodecConfig(seanet=dict(
        dimension=16, n_filters=4, ratios=(3, 2), lstm_layers=0, causal=False, pad_mode="constant",
        padding_convention="dac"), quantizer=dict(num_codebooks=2, codebook_size=32)))
    with pytest.raises(ValueError, match="padding_convention 'dac'"):
        with_backend(codec, TIME_MAJOR)


def test_the_backend_config_file_builds_the_reference_backend():
    with initialize_config_dir(config_dir=str(CONFIGS / "codec_backend"), version_base="1.3"):
        cfg = compose(config_name="default")
    assert CodecBackendConfig(**OmegaConf.to_container(cfg)) == CodecBackendConfig()
