"""Streaming == offline for the causal convs, the SEANet encoder / decoder and the whole codec."""

import pytest
import torch

from codec import Codec, CodecConfig
from codec.conv import StreamableConv1d, StreamableConvTranspose1d

CHUNKINGS = [[1] * 12, [3, 1, 5, 3], [2, 7, 3], [12]]  # frames per chunk, incl. uneven splits; 12 frames in all


def tiny_causal_codec() -> Codec:
    config = CodecConfig(
        seanet=dict(
            dimension=16, n_filters=4, ratios=(4, 4, 5), lstm_layers=2, causal=True, pad_mode="constant"
        ),
        quantizer=dict(num_codebooks=3, codebook_size=32),
    )
    return Codec(config).eval()


def stream(module, pieces: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    with module.streaming(batch_size), torch.no_grad():
        return torch.cat([module(piece) for piece in pieces], dim=-1)


def split(x: torch.Tensor, frames: list[int], frame_length: int) -> list[torch.Tensor]:
    return list(torch.split(x, [n * frame_length for n in frames], dim=-1))


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_strided_dilated_conv_streams_like_offline(pad_mode):
    conv = StreamableConv1d(3, 5, kernel_size=5, stride=2, dilation=3, causal=True, pad_mode=pad_mode)
    x = torch.randn(2, 3, 24) + 1.0  # offset: replicate and constant padding differ
    with torch.no_grad():
        offline = conv(x)
    assert offline.shape[-1] == 12
    for frames in CHUNKINGS:
        torch.testing.assert_close(stream(conv, split(x, frames, 2), batch_size=2), offline, atol=1e-6, rtol=0)


def test_transposed_conv_streams_like_offline():
    convtr = StreamableConvTranspose1d(3, 2, kernel_size=10, stride=5, causal=True)
    x = torch.randn(2, 3, 12)
    with torch.no_grad():
        offline = convtr(x)
    assert offline.shape[-1] == 60
    for frames in CHUNKINGS:
        torch.testing.assert_close(stream(convtr, split(x, frames, 1), batch_size=2), offline, atol=1e-6, rtol=0)


def test_encoder_and_decoder_stream_like_offline():
    codec = tiny_causal_codec()
    wav = torch.randn(2, 1, 12 * codec.hop_length)
    with torch.no_grad():
        latents = codec.encoder(wav)
        decoded = codec.decoder(latents)
    for frames in CHUNKINGS:
        streamed_latents = stream(codec.encoder, split(wav, frames, codec.hop_length), batch_size=2)
        assert (streamed_latents - latents).abs().max() <= 1e-5, frames
        streamed_wav = stream(codec.decoder, split(latents, frames, 1), batch_size=2)
        assert (streamed_wav - decoded).abs().max() <= 1e-5, frames


def test_codec_encode_decode_stream_like_offline():
    codec = tiny_causal_codec()
    wav = torch.randn(2, 1, 12 * codec.hop_length)
    codes = codec.encode(wav)
    decoded = codec.decode(codes)
    for frames in CHUNKINGS:
        with codec.streaming(batch_size=2):
            streamed_codes = torch.cat([codec.encode(piece) for piece in split(wav, frames, codec.hop_length)], -1)
        with codec.streaming(batch_size=2):
            streamed_wav = torch.cat([codec.decode(piece) for piece in split(codes, frames, 1)], dim=-1)
        assert torch.equal(streamed_codes, codes), frames
        assert (streamed_wav - decoded).abs().max() <= 1e-5, frames


def test_state_is_dropped_on_exit():
    codec = tiny_causal_codec()
    wav = torch.randn(1, 1, 3 * codec.hop_length)
    with codec.streaming(batch_size=1):
        first = codec.encode(wav)
    with codec.streaming(batch_size=1):
        again = codec.encode(wav)
    assert torch.equal(first, again)
    assert all(module.streaming_state is None for module in codec.modules() if hasattr(module, "streaming_state"))


def test_causal_encoder_output_ignores_the_future():
    codec = tiny_causal_codec()
    wav = torch.randn(1, 1, 6 * codec.hop_length, requires_grad=True)
    codec.encoder(wav)[0, :, 2].sum().backward()  # frame 2 covers samples [0, 3 * hop)
    assert wav.grad[..., 3 * codec.hop_length :].abs().max() == 0
    assert wav.grad[..., : 3 * codec.hop_length].abs().max() > 0


def test_streaming_refuses_what_cannot_stream():
    codec = tiny_causal_codec()
    with codec.streaming(batch_size=1), pytest.raises(ValueError, match="whole number of frames"):
        codec.encode(torch.randn(1, 1, codec.hop_length + 1))
    with codec.streaming(batch_size=1), pytest.raises(ValueError, match="batch size"):
        codec.encode(torch.randn(2, 1, codec.hop_length))
    for non_streamable in (
        CodecConfig(seanet=dict(causal=False, pad_mode="constant")),
        CodecConfig(seanet=dict(causal=True, pad_mode="reflect")),
    ):
        with pytest.raises(ValueError, match="streaming needs"):
            with Codec(non_streamable).streaming(batch_size=1):
                pass
