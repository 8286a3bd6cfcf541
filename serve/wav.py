"""The server's WAV format: a 44-byte RIFF header, IEEE float32 samples (format 3), channels interleaved.

A stream cannot know its length when it starts, so its header says 0xFFFFFFFF for the RIFF and data sizes (the
convention of streaming encoders; browsers and libsndfile read such a file to its end). The WAV of a finished
request is the same bytes with the two sizes filled in, so a client can turn a saved stream into a regular file by
patching bytes 4-7 and 40-43 (`with_sizes`). Samples are written as decoded, without peak limiting, because a
limiter that looks at the whole clip cannot run on a stream.
"""
import struct

import torch
from torch import Tensor

HEADER_BYTES = 44
UNKNOWN_SIZE = 0xFFFFFFFF
IEEE_FLOAT = 3  # WAVE_FORMAT_IEEE_FLOAT
SAMPLE_BYTES = 4


def header(sample_rate: int, channels: int, num_samples: int | None = None) -> bytes:
    """The 44-byte header of `num_samples` frames of `channels` float32 channels; None: a stream of unknown size."""
    if sample_rate <= 0 or channels <= 0:
        raise ValueError(f"sample_rate and channels must be > 0, got {sample_rate} and {channels}")
    block_align = channels * SAMPLE_BYTES
    if num_samples is None:
        data_size = riff_size = UNKNOWN_SIZE
    else:
        data_size = num_samples * block_align
        riff_size = HEADER_BYTES - 8 + data_size
        if riff_size > UNKNOWN_SIZE - 1:
            raise ValueError(f"num_samples {num_samples} does not fit in a WAV file (4 GiB)")
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff_size, b"WAVE", b"fmt ", 16, IEEE_FLOAT, channels,
                       sample_rate, sample_rate * block_align, block_align, 8 * SAMPLE_BYTES, b"data", data_size)


def frames(audio: Tensor) -> bytes:
    """audio [C, n] -> n frames of interleaved little-endian float32, as they follow the header."""
    C, n = audio.shape
    return audio.detach().to(device="cpu", dtype=torch.float32).T.contiguous().numpy().astype("<f4").tobytes()


def wav_bytes(audio: Tensor, sample_rate: int) -> bytes:
    """A whole WAV file of audio [C, samples]."""
    C, samples = audio.shape
    return header(sample_rate, C, samples) + frames(audio)


def with_sizes(stream: bytes) -> bytes:
    """A streamed WAV (header sizes 0xFFFFFFFF) with its RIFF and data sizes filled in from its length."""
    if len(stream) < HEADER_BYTES or stream[:4] != b"RIFF" or stream[36:40] != b"data":
        raise ValueError("stream must start with this module's 44-byte WAV header")
    data_size = len(stream) - HEADER_BYTES
    return (stream[:4] + struct.pack("<I", HEADER_BYTES - 8 + data_size) + stream[8:40]
            + struct.pack("<I", data_size) + stream[HEADER_BYTES:])
