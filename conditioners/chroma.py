"""Chroma melody conditioner (MusicGen-melody): the pitch-class profile of a reference recording, frame by frame.

torchaudio 2.11 ships no chroma filterbank, so we build one: every FFT bin in [min_frequency, max_frequency] goes
to the pitch class nearest its frequency (12-tone equal temperament, A4 = 440 Hz, C = class 0). Each frame is
normalized by its largest class (as AudioCraft's ChromaExtractor does); `argmax` keeps only the dominant class as a
one-hot, which MusicGen-melody uses so the model follows the melody line rather than the timbre. Frames are at the
LM frame rate (hop = sample_rate / frame_rate), then cropped or tiled to the target length.
"""

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from conditioners.attributes import WavBatch
from conditioners.condition import Condition

NUM_PITCH_CLASSES = 12


def chroma_filterbank(sample_rate: int, n_fft: int, min_frequency: float, max_frequency: float) -> torch.Tensor:
    """[n_fft // 2 + 1, 12] matrix: 1 where an FFT bin belongs to a pitch class (C = 0, C# = 1, ..., B = 11)."""
    frequencies = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    in_range = (frequencies >= min_frequency) & (frequencies <= max_frequency)
    semitones_from_a4 = 12 * torch.log2(frequencies.clamp(min=1e-3) / 440.0)
    pitch_class = (torch.round(semitones_from_a4).long() + 9) % NUM_PITCH_CLASSES  # A is class 9
    filterbank = F.one_hot(pitch_class, NUM_PITCH_CLASSES).float()
    return filterbank * in_range.unsqueeze(-1)


class ChromaConditioner(nn.Module):
    """Reference waves -> Condition(embeddings [B, S, D], mask [B, S]) at the LM frame rate.

    With seq_len, every reference is cropped to, or tiled (repeated from its start) up to, seq_len frames; without,
    each keeps its own frames, padded to the longest. A missing reference is a fully masked row.
    """

    def __init__(
        self,
        output_dim: int,
        sample_rate: int,
        frame_rate: float,
        n_fft: int,
        min_frequency: float,
        max_frequency: float,
        argmax: bool,
    ):
        super().__init__()
        hop_length = sample_rate / frame_rate
        if hop_length != int(hop_length):
            raise ValueError(f"sample_rate / frame_rate must be a whole number of samples, got {hop_length}")
        if n_fft < hop_length:
            raise ValueError(f"n_fft must be >= the hop sample_rate / frame_rate = {int(hop_length)}, got {n_fft}")
        if not 0 < min_frequency < max_frequency <= sample_rate / 2:
            raise ValueError(
                f"need 0 < min_frequency < max_frequency <= sample_rate / 2, got {min_frequency}, {max_frequency}"
            )
        self.sample_rate = sample_rate
        self.hop_length = int(hop_length)
        self.argmax = argmax
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=self.hop_length, power=2.0)
        filterbank = chroma_filterbank(sample_rate, n_fft, min_frequency, max_frequency)
        self.register_buffer("filterbank", filterbank, persistent=False)
        self.projection = nn.Linear(NUM_PITCH_CLASSES, output_dim)

    def chromagram(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, T] -> chroma [B, frames, 12], each frame scaled so its largest class is 1 (or one-hot)."""
        power = self.spectrogram(wav)  # [B, n_fft // 2 + 1, frames]
        chroma = torch.einsum("bft,fc->btc", power, self.filterbank)
        peak = chroma.amax(dim=-1, keepdim=True)
        chroma = chroma / peak.clamp(min=1e-8)
        if self.argmax:
            chroma = F.one_hot(chroma.argmax(dim=-1), NUM_PITCH_CLASSES).float() * (peak > 0)
        return chroma

    def forward(self, references: WavBatch, seq_len: int | None) -> Condition:
        device = self.projection.weight.device
        chroma = self.chromagram(references.wav.to(device))  # [B, frames, 12]
        frames = torch.clamp(
            torch.div(references.lengths.to(device) + self.hop_length - 1, self.hop_length, rounding_mode="floor"),
            max=chroma.shape[1],
        )  # [B] frames of real audio: ceil(length / hop), as a codec with this hop would give
        if seq_len is None:
            steps = torch.arange(max(1, int(frames.max())), device=device)
            mask = steps.unsqueeze(0) < frames.unsqueeze(1)  # [B, S]
            index = steps.clamp(max=chroma.shape[1] - 1).expand(len(frames), -1)
        else:
            steps = torch.arange(seq_len, device=device)
            mask = (frames > 0).unsqueeze(1).expand(-1, seq_len)  # [B, S]
            index = steps.unsqueeze(0) % frames.clamp(min=1).unsqueeze(1)  # crop, or tile from the start
        chroma = torch.gather(chroma, 1, index.unsqueeze(-1).expand(-1, -1, NUM_PITCH_CLASSES))  # [B, S, 12]
        embeddings = self.projection(chroma) * mask.unsqueeze(-1)  # [B, S, D]
        return Condition(embeddings=embeddings, mask=mask)
