"""Codec API: save / load round trip, fewer codebooks at decode, and refusal of bad input."""

import pytest
import torch

from codec import Codec, CodecConfig


def small_codec() -> Codec:
    return Codec(
        CodecConfig(
            seanet=dict(dimension=16, n_filters=4, ratios=(4, 5), lstm_layers=1, causal=True, pad_mode="constant"),
            quantizer=dict(num_codebooks=3, codebook_size=16, kmeans_iters=2),
        )
    )


def test_save_load_round_trip_gives_identical_codes(tmp_path):
    codec = small_codec().train()
    codec(torch.randn(2, 1, 400))  # k-means init and one EMA step: buffers differ from a fresh model
    codec.eval()
    wav = torch.randn(2, 1, 400)
    codes = codec.encode(wav)
    codec.save(tmp_path / "codec")
    loaded = Codec.load(tmp_path / "codec")
    assert not loaded.training
    assert loaded.config == codec.config
    assert torch.equal(loaded.encode(wav), codes)
    assert torch.equal(loaded.decode(codes), codec.decode(codes))
    assert not torch.equal(Codec(codec.config).eval().encode(wav), codes)  # a fresh model would not match


def test_load_of_a_wrong_directory_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Codec.load(tmp_path)


def test_lengths_and_fewer_codebooks():
    codec = small_codec().eval()
    wav = torch.randn(1, 1, 410)  # 20.5 frames of 20 samples -> 21 frames
    codes = codec.encode(wav)
    assert codes.shape == (1, 3, 21) and codes.dtype == torch.long
    assert codec.forward(wav).wav.shape == wav.shape
    assert torch.equal(codec.encode(wav, num_codebooks=2), codes[:, :2])
    coarse = codec.decode(codes[:, :1])
    assert coarse.shape == (1, 1, 420)
    assert not torch.allclose(coarse, codec.decode(codes))


@pytest.mark.parametrize(
    "wav,message",
    [
        (torch.randn(1, 2, 400), "2 channels, this codec expects 1"),
        (torch.randn(1, 1, 19), "shorter than one frame"),
        (torch.randn(1, 400), r"must be \[B, C, T\]"),
        (torch.full((1, 1, 400), float("nan")), "NaN or inf"),
        (torch.full((1, 1, 400), float("inf")), "NaN or inf"),
    ],
)
def test_bad_audio_is_refused(wav, message):
    codec = small_codec()
    for call in (codec.encode, codec.forward):
        with pytest.raises(ValueError, match=message):
            call(wav)


def test_bad_codes_are_refused():
    codec = small_codec()
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        codec.decode(torch.full((1, 1, 5), 16))
    with pytest.raises(ValueError, match=r"num_codebooks must be in \[1, 3\]"):
        codec.decode(torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        codec.decode(torch.zeros(1, 1, 5))
    with pytest.raises(ValueError, match=r"num_codebooks must be in \[1, 3\]"):
        codec.encode(torch.randn(1, 1, 400), num_codebooks=0)
