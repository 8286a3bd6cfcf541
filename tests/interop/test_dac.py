"""DAC interop: descript-audio-codec weights files -> Codec, against `dac.DAC` built in the test with random weights
(no downloads), and the dac_like preset against DAC's 24 kHz architecture."""

import math
import re
from dataclasses import asdict
from pathlib import Path

import dac
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from codec import Codec, CodecConfig, SEANetConfig
from codec.conv import StreamableConvTranspose1d
from interop.convert import main as convert_main
from interop.dac import codec_config_from_dac, codec_state_from_dac, convert_dac
from interop.encodec import codec_config_to_hf
from interop.state import ConversionError

pytestmark = [  # inside dac and torch.package
    pytest.mark.filterwarnings("ignore:.*weight_norm` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning"),
]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# dac.DAC's arguments for `weights_24khz.pth` (dac/utils: the "24khz" model, 32 x 10 bits at 75 Hz).
DAC_24KHZ = dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=1536,
                 decoder_rates=[8, 5, 4, 2], n_codebooks=32, codebook_size=1024, codebook_dim=8, sample_rate=24000)
# Small DACs: the 24 kHz rates (an odd stride), and all-even rates with DAC's default latent_dim (8 * 2 ** 3).
DAC_SMALL = dict(encoder_dim=8, encoder_rates=[2, 4, 5, 8], latent_dim=64, decoder_dim=96,
                 decoder_rates=[8, 5, 4, 2], n_codebooks=6, codebook_size=1024, codebook_dim=8, sample_rate=24000)
DAC_SMALL_EVEN = dict(encoder_dim=8, encoder_rates=[2, 4, 8], latent_dim=None, decoder_dim=64,
                      decoder_rates=[8, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=4, sample_rate=16000)


def random_dac(**kwargs) -> dac.DAC:
    """dac.DAC with its own init, plus random Snake frequencies and biases (DAC starts them at 1 and 0, where a
    wrong mapping between layers would not show), in eval mode."""
    torch.manual_seed(0)
    model = dac.DAC(**kwargs)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".alpha"):
                parameter.uniform_(0.5, 2.0)
            elif name.endswith(".bias"):
                parameter.normal_(0.0, 0.05)
    return model.eval()


def dac_encode_decode(model: dac.DAC, wav: torch.Tensor, num_codebooks: int | None = None):
    """DAC's own path: preprocess (pad to whole frames), encode, decode the codes -> (codes [B, K, F], wav)."""
    with torch.no_grad():
        _, codes, *_ = model.encode(model.preprocess(wav, model.sample_rate), num_codebooks)
        return codes, model.decode(model.quantizer.from_codes(codes)[0])


def assert_computes_what_dac_computes(ours: Codec, peer: dac.DAC, wav: torch.Tensor, num_codebooks: int) -> None:
    peer_codes, peer_wav = dac_encode_decode(peer, wav, num_codebooks)
    with torch.no_grad():
        codes = ours.encode(wav, num_codebooks)
        decoded = ours.decode(codes)
    assert torch.equal(codes, peer_codes)
    assert min(codes[:, k].unique().numel() for k in range(codes.shape[1])) > 4  # codes differ: a real comparison
    B, C, T = peer_wav.shape
    assert decoded.shape == (B, C, codes.shape[-1] * ours.hop_length)
    torch.testing.assert_close(decoded[..., :T], peer_wav, atol=1e-5, rtol=0)
    assert not decoded[..., T:].any()  # DAC's odd strides leave the last samples out; ours fills them with zeros
    assert peer_wav.std() > 0.01


def preset(name: str) -> CodecConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return CodecConfig(**compose(config_name=None, overrides=[f"+codec={name}"]).codec)


@pytest.mark.parametrize("kwargs", [DAC_SMALL, DAC_SMALL_EVEN], ids=["odd_stride", "even_strides"])
def test_a_converted_dac_file_computes_the_same_codes_and_audio(tmp_path, kwargs):
    peer = random_dac(**kwargs)
    peer.save(str(tmp_path / "weights.pth"), package=False)
    convert_main([str(tmp_path / "weights.pth"), "--out", str(tmp_path / "codec")])
    ours = Codec.load(tmp_path / "codec")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in peer.parameters())
    hop = ours.hop_length
    torch.manual_seed(1)
    for length in (12 * hop, 12 * hop - 37):  # a whole number of frames, and one DAC pads
        wav = 0.5 * torch.randn(2, 1, length)
        assert_computes_what_dac_computes(ours, peer, wav, num_codebooks=kwargs["n_codebooks"])
    assert_computes_what_dac_computes(ours, peer, wav, num_codebooks=2)  # fewer codebooks (DAC: eval mode)


def test_dac_like_is_dacs_24khz_model():
    """The converted 24 kHz DAC has dac_like's architecture and parameter count, and computes the same codes and,
    within 1e-5, the same audio (0.25 s, ~75 M parameters)."""
    peer = random_dac(**DAC_24KHZ)
    config = codec_config_from_dac(DAC_24KHZ | {"quantizer_dropout": 0.5}, "dac 24khz")
    dac_like = preset("dac_like")
    assert config.seanet == dac_like.seanet
    shared = ("num_codebooks", "codebook_size", "lookup", "codebook_dim", "dropout")
    assert [getattr(config.quantizer, key) for key in shared] == [
        getattr(dac_like.quantizer, key) for key in shared]
    assert (config.sample_rate, config.channels) == (dac_like.sample_rate, dac_like.channels)
    ours = Codec(config)
    ours.load_state_dict(codec_state_from_dac(peer.state_dict(), config, "dac 24khz"))
    ours.eval()
    num_parameters = sum(p.numel() for p in peer.parameters())
    assert sum(p.numel() for p in ours.parameters()) == num_parameters == 74_708_706
    torch.manual_seed(1)
    assert_computes_what_dac_computes(ours, peer, 0.5 * torch.randn(1, 1, 6000), num_codebooks=32)


def write_dac_file(path: Path, **changes) -> Path:
    peer = dac.DAC(**DAC_SMALL_EVEN)
    checkpoint = {"state_dict": peer.state_dict(), "metadata": {"kwargs": {**DAC_SMALL_EVEN, "quantizer_dropout": False,
                                                                               **changes}}}
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("changes,match", [
    ({"decoder_rates": [2, 4, 8]}, "decoder_rates"),
    ({"codebook_dim": [4, 4, 8, 8]}, "codebook_dim"),
    ({"decoder_dim": 60}, "decoder_dim"),
    ({"use_lstm": True}, "use_lstm"),
])
def test_options_codeclm_does_not_have_are_refused_by_name(tmp_path, changes, match):
    with pytest.raises(ConversionError, match=match):
        convert_dac(write_dac_file(tmp_path / "weights.pth", **changes), tmp_path / "codec")


def test_a_weight_with_no_counterpart_is_refused_naming_it():
    state = dict(random_dac(**DAC_SMALL_EVEN).state_dict())
    extra = "encoder.block.1.block.0.block.1.weight"  # a plain conv weight where DAC has weight_g / weight_v
    state[extra] = torch.zeros(1)
    config = codec_config_from_dac(DAC_SMALL_EVEN | {"quantizer_dropout": False}, "dac")
    with pytest.raises(ConversionError, match=f"no counterpart in codeclm: {re.escape(extra)}$"):
        codec_state_from_dac(state, config, "dac")
    del state[extra], state["decoder.model.0.bias"]
    with pytest.raises(ConversionError, match=r"missing \['decoder\.layers\.0\.conv\.bias'\]"):
        codec_state_from_dac(state, config, "dac")


def test_cli_refuses_a_torch_package_and_a_file_that_is_not_dacs(tmp_path, capsys):
    dac.DAC(**DAC_SMALL_EVEN).save(str(tmp_path / "package.pth"))  # DAC.save's default: a torch.package archive
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    for name, message in (("package.pth", "torch.package"), ("other.pth", "'state_dict' and 'metadata'")):
        with pytest.raises(SystemExit) as exit_info:
            convert_main([str(tmp_path / name), "--out", str(tmp_path / "codec")])
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "codec").exists()


@pytest.mark.parametrize("stride", [2, 3, 4, 5, 8])
def test_dac_transposed_conv_is_dacs_conv_transpose1d(stride):
    """DAC's up-sampling: kernel 2 * stride, padding ceil(stride / 2), no output_padding (odd strides lose a sample)."""
    convtr = StreamableConvTranspose1d(6, 4, 2 * stride, stride, causal=False, padding_convention="dac")
    x = torch.randn(2, 6, 9)
    expected = F.conv_transpose1d(x, convtr.convtr.weight, convtr.convtr.bias, stride=stride,
                                  padding=math.ceil(stride / 2))
    assert expected.shape[-1] == 9 * stride - stride % 2
    torch.testing.assert_close(convtr(x), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="padding_convention 'dac' is non-causal"):
        StreamableConvTranspose1d(6, 4, 2 * stride, stride, causal=True, padding_convention="dac")


def test_dac_padding_is_non_causal_zero_padding():
    with pytest.raises(ValueError, match="padding_convention 'dac'"):
        SEANetConfig(padding_convention="dac", causal=True, pad_mode="constant")
    with pytest.raises(ValueError, match="padding_convention 'dac'"):
        SEANetConfig(padding_convention="dac", causal=False, pad_mode="reflect")
    with pytest.raises(ValueError, match="padding_convention must be one of"):
        SEANetConfig(padding_convention="same")


@pytest.mark.parametrize("option,value", [
    ("decoder_n_filters", 8), ("encoder_last_kernel_size", 3), ("padding_convention", "dac"),
])
def test_the_hf_encodec_export_refuses_dacs_layout_by_name(option, value):
    seanet = {"n_filters": 4, "dimension": 8, "ratios": (4, 2), "causal": False, "pad_mode": "constant", option: value}
    config = CodecConfig(sample_rate=8000, bandwidths=(5.0,), seanet=seanet,
                         quantizer={"num_codebooks": 1, "codebook_size": 32})
    with pytest.raises(ConversionError, match=f"seanet.{option}={value!r}"):
        codec_config_to_hf(config)


def test_converted_config_round_trips_through_the_codec_export(tmp_path):
    config = codec_config_from_dac(DAC_SMALL_EVEN | {"quantizer_dropout": 0.5}, "dac")
    Codec(config).save(tmp_path)
    assert asdict(Codec.load(tmp_path).config) == asdict(config)
    assert config.quantizer.dead_code_threshold == 0.0 and config.quantizer.dropout == 0.5
    assert config.bandwidths == (4 * 16000 / 64 * 8 / 1000,)
