"""Pictures of audio for people: log-mel spectrogram PNGs (generate.py, the demo, the README)."""
from pathlib import Path

import torch
import torchaudio
from matplotlib.figure import Figure  # no pyplot: writes files without touching the session's backend


def log_mel(wav: torch.Tensor, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    """wav [C, T] -> log10 mel power of the channel mean, [n_mels, frames]."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=n_mels)
    return torch.log10(mel(wav.mean(dim=0).float()).clamp_min(1e-8))


def save_spectrogram(path: str | Path, wav: torch.Tensor, sample_rate: int, title: str = "") -> None:
    """Write the log-mel spectrogram of wav [C, T] as a PNG with a time axis in seconds."""
    image = log_mel(wav, sample_rate).numpy()
    seconds = wav.shape[-1] / sample_rate
    figure = Figure(figsize=(8, 3))
    axis = figure.subplots()
    axis.imshow(image, origin="lower", aspect="auto", extent=(0, seconds, 0, image.shape[0]), cmap="magma",
                vmin=image.max() - 8, vmax=image.max())
    axis.set_xlabel("time (s)")
    axis.set_ylabel("mel bin")
    axis.set_title(title[:90], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
