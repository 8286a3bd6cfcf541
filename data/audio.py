"""Audio I/O: read any file soundfile understands into float32 [C, T], convert rate and channels, write wav.

torchaudio 2.11 cannot open files (it needs torchcodec), so reading and writing go through soundfile
(libsndfile: wav, flac, ogg/vorbis, mp3); resampling uses torchaudio's windowed-sinc resampler.
"""
from functools import lru_cache
from pathlib import Path

import soundfile
import torch
import torchaudio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioReadError(RuntimeError):
    """A file that exists but cannot be decoded, or holds no samples."""


def read_audio(path: str | Path, start_seconds: float = 0.0, duration_seconds: float | None = None
               ) -> tuple[torch.Tensor, int]:
    """Read `duration_seconds` (None: to the end) from `start_seconds`. Returns (wav [C, T] float32, sample_rate).

    Only the requested frames are decoded, so random segments of long files stay cheap.
    """
    if start_seconds < 0:
        raise ValueError(f"start_seconds must be >= 0, got {start_seconds}")
    if duration_seconds is not None and duration_seconds <= 0:
        raise ValueError(f"duration_seconds must be > 0 or None, got {duration_seconds}")
    try:
        with soundfile.SoundFile(str(path)) as sound:
            sample_rate = sound.samplerate
            sound.seek(min(int(round(start_seconds * sample_rate)), sound.frames))
            num_frames = -1 if duration_seconds is None else int(round(duration_seconds * sample_rate))
            samples = sound.read(frames=num_frames, dtype="float32", always_2d=True)  # [T, C]
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioReadError(f"cannot read audio file {path}: {error}") from error
    return torch.from_numpy(samples.T.copy()), sample_rate


@lru_cache(maxsize=16)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    # The sinc kernel depends only on the rate pair: build it once per pair and process.
    return torchaudio.transforms.Resample(orig_freq=source_rate, new_freq=target_rate)


def resample(wav: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """wav [..., T] at source_rate -> [..., T * target_rate / source_rate] at target_rate."""
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be > 0, got source_rate={source_rate}, target_rate={target_rate}")
    if source_rate == target_rate:
        return wav
    return _resampler(source_rate, target_rate)(wav)


def convert_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """wav [C, T] -> [channels, T]: average to mono, or copy mono to every channel."""
    source_channels = wav.shape[0]
    if channels == source_channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if source_channels == 1:
        return wav.expand(channels, -1).contiguous()
    raise ValueError(f"channels must be 1, {source_channels} or any count from mono input, got {channels} "
                     f"for a {source_channels}-channel signal")


def convert_audio(wav: torch.Tensor, source_rate: int, target_rate: int, channels: int) -> torch.Tensor:
    """wav [C, T] -> [channels, T'] at target_rate."""
    return resample(convert_channels(wav, channels), source_rate, target_rate)


def normalize_rms(wav: torch.Tensor, target_db: float, peak_limit: float = 0.99) -> torch.Tensor:
    """Scale wav so its RMS is `target_db` dBFS, then scale down further if its peak would exceed `peak_limit`.

    A simple loudness target (no K-weighting): enough to even out sources before codec training.
    Silent input is returned unchanged.
    """
    if not 0 < peak_limit <= 1:
        raise ValueError(f"peak_limit must be in (0, 1], got {peak_limit}")
    rms = wav.pow(2).mean().sqrt()
    if rms == 0:
        return wav
    return limit_peak(wav * (10 ** (target_db / 20) / rms), peak_limit)


def limit_peak(wav: torch.Tensor, peak_limit: float = 0.99) -> torch.Tensor:
    """Scale wav down so that its peak is at most `peak_limit` (generated audio before write_wav); quieter audio is
    returned unchanged."""
    peak = wav.abs().max()
    return wav * (peak_limit / peak) if peak > peak_limit else wav


def write_wav(path: str | Path, wav: torch.Tensor, sample_rate: int) -> None:
    """Write wav [C, T] float as 16-bit PCM (values outside [-1, 1] are an error, not clipped)."""
    if wav.dim() != 2:
        raise ValueError(f"wav must be [C, T], got shape {tuple(wav.shape)}")
    peak = wav.abs().max().item() if wav.numel() else 0.0
    if peak > 1:
        raise ValueError(f"wav peak must be <= 1 to write 16-bit PCM, got {peak:.3f}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wav.T.numpy(), sample_rate, subtype="PCM_16")
