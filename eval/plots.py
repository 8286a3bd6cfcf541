"""Pictures of audio for people: log-mel spectrogram PNGs (generate.py, the demo, the README), and a reference
beside its decoding (eval.codec_eval --figure)."""
from pathlib import Path

import torch
import torchaudio
from torch import Tensor
from matplotlib.figure import Figure  # no pyplot: writes files without touching the session's backend

from eval.pitch import ChromaConfig, chroma_frames


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


def save_reconstruction(path: str | Path, reference: Tensor, decoded: Tensor, sample_rate: int, title: str = "") -> None:
    """Write a PNG of reference and decoded [C, T] one above the other: log-mel spectrograms (loudness and timbre)
    on the left, chromagrams (eval.pitch's pitch classes per frame, each frame scaled to its maximum) on the
    right: the notes."""
    seconds = reference.shape[-1] / sample_rate
    figure = Figure(figsize=(12, 5))
    axes = figure.subplots(2, 2, sharex=True)
    for row, (name, wav) in enumerate((("reference", reference), ("decoded", decoded))):
        mel = log_mel(wav, sample_rate).numpy()
        axes[row, 0].imshow(mel, origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[0]), cmap="magma",
                            vmin=mel.max() - 8, vmax=mel.max())
        axes[row, 0].set_ylabel(f"{name}\nmel bin")
        chroma = chroma_frames(wav.mean(dim=0).float(), sample_rate, ChromaConfig()).T  # [12, frames]
        chroma = (chroma / chroma.amax(dim=0, keepdim=True).clamp_min(1e-8)).numpy()
        axes[row, 1].imshow(chroma, origin="lower", aspect="auto", extent=(0, seconds, -0.5, 11.5), cmap="magma",
                            interpolation="nearest")
        axes[row, 1].set_yticks(range(12), ["C", "", "D", "", "E", "F", "", "G", "", "A", "", "B"])
    for axis in axes[1]:
        axis.set_xlabel("time (s)")
    figure.suptitle(title[:120], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
