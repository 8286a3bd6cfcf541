"""Intelligibility: a small CTC recogniser trained on the speech set, and the character error rate.

Features: the log-mel spectrogram of a clip, less the clip's mean log energy (a louder or quieter rendition of
the same words has the same features, as in eval.instrument), standardised per band with the training set's
statistics. Model: two 1-D convolutions over time (the first with stride 2, so one output frame per two
spectrogram frames) -> a bidirectional GRU -> a linear layer to the CTC vocabulary: blank (index 0) then
data.speech_text.SPEECH_CHARACTERS. Trained with CTC loss (Graves et al. 2006) and Adam on batches of clips of
similar length; transcribed by greedy decoding (the best symbol per frame, repeats merged, blanks dropped). The GRU
reads packed sequences, so a clip's transcript does not depend on the clips it is batched with.

The output rate must exceed the speaking rate: CTC needs a frame per character, and a blank between two equal
characters. espeak-ng at its fastest (230 words per minute) says about 20 characters per second; at 24 kHz with
hop_length 240 the model emits 50 frames per second.

Shapes: B clips, M mel bands, F spectrogram frames, F' = ceil(F / 2) output frames, V = 1 + 32 symbols, L
transcript length.
"""
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from data.speech_text import SPEECH_CHARACTERS

BLANK = 0
VOCABULARY = ("<blank>",) + tuple(SPEECH_CHARACTERS)  # V symbols; character c has index 1 + its position


@dataclass
class RecognizerConfig:
    """configs/speech_eval.yaml `recognizer:` documents every field."""
    n_fft: int
    hop_length: int
    n_mels: int
    channels: int
    hidden: int
    gru_layers: int
    steps: int
    batch_frames: int
    lr: float
    seed: int


def edit_distance(hypothesis: str, reference: str) -> int:
    """Levenshtein distance: the fewest character insertions, deletions and substitutions turning one into the
    other."""
    previous = list(range(len(reference) + 1))
    for row, hypothesis_char in enumerate(hypothesis, start=1):
        current = [row]
        for column, reference_char in enumerate(reference, start=1):
            current.append(min(previous[column] + 1, current[column - 1] + 1,
                               previous[column - 1] + (hypothesis_char != reference_char)))
        previous = current
    return previous[-1]


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate: edit_distance / len(reference); above 1 when the hypothesis inserts enough."""
    if not reference:
        raise ValueError("reference must hold at least one character, got ''")
    return edit_distance(hypothesis, reference) / len(reference)


def encode_text(text: str) -> Tensor:
    """text in SPEECH_CHARACTERS -> symbol indices [L] (1..V-1; 0 is the blank)."""
    unknown = sorted(set(text) - set(SPEECH_CHARACTERS))
    if unknown:
        raise ValueError(f"text {text!r} has characters outside SPEECH_CHARACTERS: {unknown}")
    return torch.tensor([1 + SPEECH_CHARACTERS.index(char) for char in text], dtype=torch.long)


def greedy_decode(log_probs: Tensor) -> str:
    """log_probs [F', V] of one clip -> text: the best symbol per frame, runs merged, blanks dropped."""
    best = log_probs.argmax(dim=-1).tolist()
    symbols = [symbol for index, symbol in enumerate(best)
               if symbol != BLANK and (index == 0 or best[index - 1] != symbol)]
    return "".join(VOCABULARY[symbol] for symbol in symbols)


class LogMel(nn.Module):
    """wav [T] at sample_rate -> log-mel [M, F] less its mean (gain invariance), F = T // hop_length + 1."""

    def __init__(self, config: RecognizerConfig, sample_rate: int):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=config.n_fft,
                                                        hop_length=config.hop_length, n_mels=config.n_mels)

    def forward(self, wav: Tensor) -> Tensor:
        mel = self.mel(wav)  # [M, F]
        log_mel = torch.log(mel + 1e-8 * mel.amax().clamp(min=1e-12))  # floor 80 dB below the clip's peak
        return log_mel - log_mel.mean()


class Emissions(NamedTuple):
    log_probs: Tensor  # [B, F', V] log-softmax over the vocabulary
    lengths: Tensor  # [B] valid output frames per clip


class CTCRecognizer(nn.Module):
    def __init__(self, config: RecognizerConfig, sample_rate: int):
        super().__init__()
        self.sample_rate = sample_rate
        self.features = LogMel(config, sample_rate)
        self.register_buffer("feature_mean", torch.zeros(config.n_mels, 1))
        self.register_buffer("feature_std", torch.ones(config.n_mels, 1))
        self.downsample = nn.Conv1d(config.n_mels, config.channels, kernel_size=5, stride=2, padding=2)
        self.context = nn.Conv1d(config.channels, config.channels, kernel_size=5, padding=2)
        self.gru = nn.GRU(config.channels, config.hidden, num_layers=config.gru_layers, batch_first=True,
                          bidirectional=True)
        self.output = nn.Linear(2 * config.hidden, len(VOCABULARY))

    def log_mel(self, wav: Tensor) -> Tensor:
        """wav [T] -> standardised log-mel [M, F]."""
        return (self.features(wav) - self.feature_mean) / self.feature_std

    def forward(self, log_mels: list[Tensor]) -> Emissions:
        """log_mels: B standardised log-mels [M, F_b] -> emissions. Padding frames never reach a clip's output:
        the convolutions see zeros beyond its end (as they would alone) and the GRU reads packed sequences."""
        lengths = torch.tensor([(log_mel.shape[1] + 1) // 2 for log_mel in log_mels])  # F' per clip
        padded = pad_sequence([log_mel.T for log_mel in log_mels], batch_first=True).transpose(1, 2)  # [B, M, F]
        frames = F.gelu(self.downsample(padded))  # [B, C, F']
        mask = torch.arange(frames.shape[2])[None, :] < lengths[:, None]  # [B, F']
        frames = frames * mask[:, None, :]  # zero past each clip's end, as the clip alone would pad
        frames = F.gelu(self.context(frames)).transpose(1, 2)  # [B, F', C]
        packed = pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True)  # [B, F', 2H]
        return Emissions(F.log_softmax(self.output(hidden), dim=-1), lengths)

    def transcribe(self, wavs: list[Tensor]) -> list[str]:
        """Mono clips [T_b] at self.sample_rate -> their greedy transcripts."""
        with torch.no_grad():
            emissions = self([self.log_mel(wav) for wav in wavs])
        return [greedy_decode(log_probs[:length]) for log_probs, length in zip(*emissions)]


class TrainedRecognizer(NamedTuple):
    recognizer: CTCRecognizer  # in eval mode
    losses: list[float]  # the CTC loss (per target character, batch mean) of every step


def length_batches(lengths: list[int], batch_frames: int, rng: random.Random) -> list[list[int]]:
    """Clip indices grouped into batches of similar length, each holding at most batch_frames padded frames (a
    longer clip goes alone), in a random order."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    batches, current = [], []
    for index in order:
        if current and lengths[index] * (len(current) + 1) > batch_frames:
            batches.append(current)
            current = []
        current.append(index)
    batches.append(current)
    rng.shuffle(batches)
    return batches


def train_recognizer(wavs: list[Tensor], texts: list[str], config: RecognizerConfig, sample_rate: int
                     ) -> TrainedRecognizer:
    """Mono clips [T_b] at sample_rate with their transcripts -> a recogniser trained for config.steps Adam steps
    (deterministic for a seed)."""
    if len(wavs) != len(texts):
        raise ValueError(f"got {len(wavs)} clips for {len(texts)} transcripts")
    if not wavs:
        raise ValueError("the recogniser needs at least one training clip, got none")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    recognizer = CTCRecognizer(config, sample_rate)
    targets = [encode_text(text) for text in texts]
    with torch.no_grad():
        raw = [recognizer.features(wav) for wav in wavs]  # [M, F_b] each
        every_frame = torch.cat(raw, dim=1)  # [M, sum F_b]
        recognizer.feature_mean.copy_(every_frame.mean(dim=1, keepdim=True))
        recognizer.feature_std.copy_(every_frame.std(dim=1, keepdim=True).clamp(min=1e-4))
        log_mels = [(log_mel - recognizer.feature_mean) / recognizer.feature_std for log_mel in raw]
    for index, (log_mel, target) in enumerate(zip(log_mels, targets)):
        if (log_mel.shape[1] + 1) // 2 < len(target):
            raise ValueError(f"training clip {index} has {(log_mel.shape[1] + 1) // 2} output frames for "
                             f"{len(target)} characters: lower hop_length")
    optimizer = torch.optim.Adam(recognizer.parameters(), lr=config.lr)
    # One cosine decay over all steps: a few minutes of CPU must end at a low learning rate to settle.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step /
                                                                                             config.steps)))
    recognizer.train()
    losses, batches = [], []
    for _ in range(config.steps):
        if not batches:
            batches = length_batches([log_mel.shape[1] for log_mel in log_mels], config.batch_frames, rng)
        batch = batches.pop()
        emissions = recognizer([log_mels[index] for index in batch])
        batch_targets = [targets[index] for index in batch]
        loss = F.ctc_loss(emissions.log_probs.transpose(0, 1), torch.cat(batch_targets), emissions.lengths,
                          torch.tensor([len(target) for target in batch_targets]), blank=BLANK,
                          zero_infinity=True)  # mean over clips of the loss per target character
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(recognizer.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return TrainedRecognizer(recognizer.eval(), losses)


def save_recognizer(recognizer: CTCRecognizer, path: Path, fingerprint: dict) -> None:
    """fingerprint: what it was trained on and with (compared by load_cached_recognizer)."""
    torch.save({"fingerprint": fingerprint, "state": recognizer.state_dict()}, path)


def load_cached_recognizer(path: Path, fingerprint: dict, config: RecognizerConfig, sample_rate: int
                           ) -> CTCRecognizer | None:
    """The recogniser saved at path if it was trained on the same clips with the same config, else None."""
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    if saved["fingerprint"] != fingerprint:
        return None
    recognizer = CTCRecognizer(config, sample_rate)
    recognizer.load_state_dict(saved["state"])
    return recognizer.eval()


def fingerprint(config: RecognizerConfig, sample_rate: int, sources: list[str]) -> dict:
    """What a cached recogniser must agree on to be reused: its config, its input rate and the clips it learnt
    from (their paths and transcripts)."""
    return {"config": asdict(config), "sample_rate": sample_rate, "sources": sources}
