"""Which instrument plays: a tiny MLP on log-mel statistics, trained on labelled clips; its hidden layer is the
embedding the Fréchet distance of eval.adherence is computed on.

Features of a clip: the per-band mean and standard deviation over time of its log-mel spectrogram, after the
clip's overall mean log energy is subtracted (with a floor 80 dB below the clip's peak, so a louder or quieter rendition of the same timbre has the same
features). The classifier standardises them with the training set's statistics, then Linear -> ReLU (the
embedding) -> Linear (logits over the training labels); trained full batch with Adam on cross entropy.

Shapes: N clips, E embedding width (`hidden`), M mel bands.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn


@dataclass
class InstrumentConfig:
    """configs/adherence.yaml `instrument:` documents every field."""
    n_fft: int
    hop_length: int
    n_mels: int
    hidden: int
    steps: int
    lr: float
    weight_decay: float
    seed: int


class LogMelStatistics(nn.Module):
    """wav [N, T] at sample_rate -> features [N, 2M]: per-band mean then per-band std of the log-mel."""

    def __init__(self, config: InstrumentConfig, sample_rate: int):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=config.n_fft,
                                                        hop_length=config.hop_length, n_mels=config.n_mels)

    def forward(self, wav: Tensor) -> Tensor:
        mel = self.mel(wav)  # [N, M, frames]
        floor = 1e-8 * mel.amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)  # 80 dB below the clip's peak
        log_mel = torch.log(mel + floor)
        log_mel = log_mel - log_mel.mean(dim=(1, 2), keepdim=True)  # gain invariance
        return torch.cat([log_mel.mean(dim=2), log_mel.std(dim=2)], dim=1)


class InstrumentClassifier(nn.Module):
    def __init__(self, labels: list[str], num_features: int, hidden: int):
        super().__init__()
        self.labels = list(labels)
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.hidden = nn.Linear(num_features, hidden)
        self.output = nn.Linear(hidden, len(self.labels))

    def embed(self, features: Tensor) -> Tensor:
        """features [N, 2M] -> embeddings [N, E] (the ReLU hidden layer)."""
        return F.relu(self.hidden((features - self.feature_mean) / self.feature_std))

    def forward(self, features: Tensor) -> Tensor:
        """features [N, 2M] -> logits [N, len(labels)]."""
        return self.output(self.embed(features))

    def predict(self, features: Tensor) -> list[str]:
        with torch.no_grad():
            return [self.labels[index] for index in self(features).argmax(dim=1).tolist()]


def train_classifier(features: Tensor, labels: list[str], config: InstrumentConfig) -> InstrumentClassifier:
    """features [N, 2M], one label per row -> a trained classifier in eval mode (deterministic for a seed)."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError(f"the instrument classifier needs clips of at least 2 instruments, got {names}")
    if features.shape[0] != len(labels):
        raise ValueError(f"got {features.shape[0]} feature rows for {len(labels)} labels")
    torch.manual_seed(config.seed)
    classifier = InstrumentClassifier(names, features.shape[1], config.hidden)
    classifier.feature_mean.copy_(features.mean(dim=0))
    classifier.feature_std.copy_(features.std(dim=0).clamp(min=1e-4))
    targets = torch.tensor([names.index(label) for label in labels])
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.steps):
        optimizer.zero_grad()
        F.cross_entropy(classifier(features), targets).backward()
        optimizer.step()
    return classifier.eval()


def save_classifier(classifier: InstrumentClassifier, path: Path, fingerprint: dict) -> None:
    """fingerprint: what it was trained on and with (compared by load_cached_classifier)."""
    torch.save({"labels": classifier.labels, "fingerprint": fingerprint, "state": classifier.state_dict()}, path)


def load_cached_classifier(path: Path, fingerprint: dict, config: InstrumentConfig) -> InstrumentClassifier | None:
    """The classifier saved at path if it was trained on the same data with the same config, else None."""
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    if saved["fingerprint"] != fingerprint:
        return None
    classifier = InstrumentClassifier(saved["labels"], 2 * config.n_mels, config.hidden)
    classifier.load_state_dict(saved["state"])
    return classifier.eval()


def fingerprint(config: InstrumentConfig, sample_rate: int, window_seconds: float, sources: list[str]) -> dict:
    """What a cached classifier must agree on to be reused: its config, its input and the clips it learnt from."""
    return {"config": asdict(config), "sample_rate": sample_rate, "window_seconds": window_seconds,
            "sources": sources}
