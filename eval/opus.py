"""Opus reference codec: encode and decode a clip through ffmpeg + libopus at a given bitrate.

Needs an `ffmpeg` built with libopus on PATH (Debian: `apt-get install ffmpeg`). ffmpeg resamples to a rate Opus
supports (48 kHz) on the way in and back to the clip's rate on the way out; the decoder drops Opus's pre-skip,
so the output is time-aligned with the input.
"""
import subprocess
import tempfile
from pathlib import Path

import soundfile
import torch
from torch import Tensor

MIN_BITRATE_KBPS = 6.0  # libopus refuses lower bitrates for mono audio


def opus_round_trip(wav: Tensor, sample_rate: int, bitrate_kbps: float) -> Tensor:
    """wav [C, T] -> [C, T] after Opus compression at `bitrate_kbps` (total over channels)."""
    C, T = wav.shape
    if bitrate_kbps < MIN_BITRATE_KBPS:
        raise ValueError(f"bitrate_kbps must be >= {MIN_BITRATE_KBPS} for Opus, got {bitrate_kbps}")
    with tempfile.TemporaryDirectory() as folder:
        source, compressed, decoded = (Path(folder) / name for name in ("in.wav", "out.opus", "out.wav"))
        soundfile.write(source, wav.T.cpu().numpy(), sample_rate, subtype="FLOAT")
        _ffmpeg("-i", str(source), "-c:a", "libopus", "-b:a", f"{bitrate_kbps * 1000:.0f}", str(compressed))
        _ffmpeg("-i", str(compressed), "-ar", str(sample_rate), "-c:a", "pcm_f32le", str(decoded))
        data, _ = soundfile.read(decoded, dtype="float32", always_2d=True)  # [T', C]
    out = torch.from_numpy(data).T[:, :T]
    return torch.nn.functional.pad(out, (0, T - out.shape[-1])).to(wav)


def _ffmpeg(*args: str) -> None:
    command = ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {result.stderr.strip()}")
