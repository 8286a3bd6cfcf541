"""Chroma melody conditioner (MusicGen-melody): the pitch-class profile of a reference recording, frame by frame.

The power spectrogram goes through a chroma filterbank (`filterbank`):
  nearest   every FFT bin in [min_frequency, max_frequency] goes to the pitch class nearest its frequency (12-tone
            equal temperament, A4 = 440 Hz, C = class 0); torchaudio 2.11 ships no chroma filterbank, so we build it;
  gaussian  librosa's `filters.chroma` (Gaussian bumps around each pitch class, weighted towards the middle octaves),
            which AudioCraft's ChromaExtractor and HF's MusicgenMelodyFeatureExtractor use; we take HF's copy,
            `transformers.audio_utils.chroma_filter_bank`.
Each frame is normalized by its largest class (as AudioCraft's ChromaExtractor does); `argmax` keeps only the
dominant class as a one-hot, which MusicGen-melody uses so the model follows the melody line rather than the timbre.

The frames become the condition in one of two ways (`length`):
  null      frames at the LM frame rate (hop = sample_rate / frame_rate), then cropped or tiled to the target length;
            a missing reference is a fully masked, all-zero row (and so is the null condition);
  N         MusicGen-Melody: every STFT frame of the batch's waves (a shorter one runs on into the batch padding's
            silence, as in HF's padded batch), repeated from the first and cut to N frames (HF's `chroma_length`),
            all real (no mask); a missing reference is silence, and the null (CFG)
            condition is the chroma of silence too (Condition.null), as in HF's MusicgenMelodyForConditionalGeneration.
"""

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from transformers.audio_utils import chroma_filter_bank

from conditioners.attributes import WavBatch
from conditioners.condition import Condition

NUM_PITCH_CLASSES = 12
FILTERBANKS = ("nearest", "gaussian")
SILENT_FRAMES = ("zero", "argmax")


def chroma_filterbank(sample_rate: int, n_fft: int, min_frequency: float, max_frequency: float) -> torch.Tensor:
    """[n_fft // 2 + 1, 12] matrix: 1 where an FFT bin belongs to a pitch class (C = 0, C# = 1, ..., B = 11)."""
    frequencies = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    in_range = (frequencies >= min_frequency) & (frequencies <= max_frequency)
    semitones_from_a4 = 12 * torch.log2(frequencies.clamp(min=1e-3) / 440.0)
    pitch_class = (torch.round(semitones_from_a4).long() + 9) % NUM_PITCH_CLASSES  # A is class 9
    filterbank = F.one_hot(pitch_class, NUM_PITCH_CLASSES).float()
    return filterbank * in_range.unsqueeze(-1)


def gaussian_chroma_filterbank(sample_rate: int, n_fft: int) -> torch.Tensor:
    """[n_fft // 2 + 1, 12] librosa chroma filters (A4 = 440 Hz, C first), built as HF's MusicgenMelodyFeatureExtractor
    builds them (float64, then float32)."""
    filters = chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=NUM_PITCH_CLASSES, sampling_rate=sample_rate,
                                 tuning=0)  # [12, n_fft // 2 + 1]
    return torch.from_numpy(filters).float().T


class ChromaConditioner(nn.Module):
    """Reference waves -> Condition(embeddings [B, S, D], mask [B, S]).

    Without `length`: with seq_len, every reference is cropped to, or tiled (repeated from its start) up to, seq_len
    frames; without, each keeps its own frames, padded to the longest. A missing reference is a fully masked row.
    With `length`: see the module docstring (S = length, seq_len is not used).
    silent_frames: what an argmax frame without energy becomes: "zero" (nothing), or "argmax": the one-hot on class
    0 (C) that argmax of an all-zero frame returns (HF, AudioCraft).
    max_duration: seconds of each reference kept (HF's feature extractor cuts at `chunk_length`); None = all.
    """

    def __init__(
        self,
        output_dim: int,
        sample_rate: int,
        frame_rate: float,
        n_fft: int,
        min_frequency: float | None,
        max_frequency: float | None,
        argmax: bool,
        filterbank: str = "nearest",
        normalized: bool = False,
        silent_frames: str = "zero",
        length: int | None = None,
        max_duration: float | None = None,
    ):
        super().__init__()
        hop_length = sample_rate / frame_rate
        if hop_length != int(hop_length):
            raise ValueError(f"sample_rate / frame_rate must be a whole number of samples, got {hop_length}")
        if n_fft < hop_length:
            raise ValueError(f"n_fft must be >= the hop sample_rate / frame_rate = {int(hop_length)}, got {n_fft}")
        if filterbank not in FILTERBANKS:
            raise ValueError(f"filterbank must be one of {FILTERBANKS}, got {filterbank!r}")
        if filterbank == "nearest" and not (
                min_frequency is not None and max_frequency is not None
                and 0 < min_frequency < max_frequency <= sample_rate / 2):
            raise ValueError(
                f"filterbank 'nearest' needs 0 < min_frequency < max_frequency <= sample_rate / 2, got "
                f"{min_frequency}, {max_frequency}"
            )
        if filterbank == "gaussian" and (min_frequency, max_frequency) != (None, None):
            raise ValueError(f"min_frequency and max_frequency apply to filterbank 'nearest' only (the gaussian bank "
                             f"weights every bin): set them to null, got {min_frequency}, {max_frequency}")
        if silent_frames not in SILENT_FRAMES:
            raise ValueError(f"silent_frames must be one of {SILENT_FRAMES}, got {silent_frames!r}")
        if silent_frames == "argmax" and not argmax:
            raise ValueError("silent_frames 'argmax' needs argmax: true (without argmax a silent frame is zeros)")
        if length is not None and length < 1:
            raise ValueError(f"length must be >= 1 frames or None (tile to seq_len), got {length}")
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration must be > 0 seconds or None (keep everything), got {max_duration}")
        self.sample_rate = sample_rate
        self.hop_length = int(hop_length)
        self.n_fft = n_fft
        self.argmax = argmax
        self.silent_frames = silent_frames
        self.length = length
        self.max_samples = None if max_duration is None else round(max_duration * sample_rate)
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=self.hop_length, power=2.0,
                                                             normalized=normalized)
        # The window follows from n_fft, as the filterbank does: neither is a weight, so checkpoints hold neither.
        self.spectrogram.register_buffer("window", self.spectrogram.window, persistent=False)
        if filterbank == "nearest":
            bank = chroma_filterbank(sample_rate, n_fft, min_frequency, max_frequency)
        else:
            bank = gaussian_chroma_filterbank(sample_rate, n_fft)
        self.register_buffer("filterbank", bank, persistent=False)  # [n_fft // 2 + 1, 12]
        self.projection = nn.Linear(NUM_PITCH_CLASSES, output_dim)

    def chromagram(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, T] -> chroma [B, frames, 12], each frame scaled so its largest class is 1 (or one-hot)."""
        if self.max_samples is not None:
            wav = wav[:, : self.max_samples]
        if wav.shape[-1] < self.n_fft:  # too short for centred frames: zero-pad both sides to n_fft, as HF does
            pad = self.n_fft - wav.shape[-1]
            wav = F.pad(wav, (pad // 2, pad - pad // 2))
        power = self.spectrogram(wav)  # [B, n_fft // 2 + 1, frames]
        chroma = torch.einsum("bft,fc->btc", power, self.filterbank)
        peak = chroma.amax(dim=-1, keepdim=True)
        chroma = chroma / peak.clamp(min=1e-8)
        if self.argmax:
            chroma = F.one_hot(chroma.argmax(dim=-1), NUM_PITCH_CLASSES).float()
            if self.silent_frames == "zero":
                chroma = chroma * (peak > 0)
        return chroma

    def silent_frame(self) -> torch.Tensor:
        """The chroma [12] of a frame without energy: one-hot C under silent_frames 'argmax', else zeros."""
        frame = torch.zeros(NUM_PITCH_CLASSES, device=self.projection.weight.device)
        if self.silent_frames == "argmax":
            frame[0] = 1.0
        return frame

    def forward(self, references: WavBatch, seq_len: int | None) -> Condition:
        device = self.projection.weight.device
        chroma = self.chromagram(references.wav.to(device))  # [B, frames, 12]
        if self.length is not None:
            return self._repeated(chroma)
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

    def _repeated(self, chroma: torch.Tensor) -> Condition:
        """chroma [B, frames, 12] -> `length` frames: projected, repeated from the first frame, cut (HF's order)."""
        B, frames, _ = chroma.shape
        repeats = -(-self.length // frames)  # ceil
        embeddings = self.projection(chroma).repeat(1, repeats, 1)[:, : self.length]  # [B, length, D]
        null = self.projection(self.silent_frame()).expand(B, self.length, -1)  # [B, length, D]: silence
        mask = torch.ones(B, self.length, dtype=torch.bool, device=chroma.device)
        return Condition(embeddings=embeddings, mask=mask, null=null)
