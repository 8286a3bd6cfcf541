"""Manifests: one JSON object per audio file, one file per split, in AudioCraft's layout.

A split is a folder holding `data.jsonl` (or `data.jsonl.gz`); each line has the fields of AudioCraft's
`AudioMeta` (path, duration, sample_rate, amplitude, weight, info_path) plus `channels`, which AudioCraft
manifests lack (None there). Per-file metadata (title, description, genre, moods, keywords, instrument, key,
bpm, ...) lives in a sidecar `.json` next to the audio, as in AudioCraft's MusicDataset, so a dataset prepared
for AudioCraft loads unchanged. Unknown manifest keys are ignored.

Relative paths resolve against the manifest's folder, then against the working directory (AudioCraft's
`egs/` manifests are relative to the repository root).
"""
import gzip
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MANIFEST_NAMES = ("data.jsonl", "data.jsonl.gz")


@dataclass(frozen=True)
class AudioEntry:
    path: str
    duration: float  # seconds
    sample_rate: int
    channels: int | None = None
    amplitude: float | None = None  # peak absolute sample value
    weight: float | None = None  # relative sampling weight
    info_path: str | None = None  # AudioCraft "archive.zip:inner/path.json"; kept for round trips, not read

    @classmethod
    def from_dict(cls, line: dict) -> "AudioEntry":
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in line.items() if key in known})


def _open_text(path: Path, mode: str):
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def resolve_manifest_path(path: str | Path) -> Path:
    """A manifest file, or a split folder containing data.jsonl / data.jsonl.gz."""
    path = Path(path)
    if path.is_dir():
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"manifest folder {path} has neither {' nor '.join(MANIFEST_NAMES)}")
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    return path


def _resolve_audio_path(audio_path: str, manifest_folder: Path) -> str:
    candidate = Path(audio_path)
    if candidate.is_absolute():
        return audio_path
    beside_manifest = manifest_folder / candidate
    if beside_manifest.exists() or not candidate.exists():
        return str(beside_manifest)
    return str(candidate.resolve())


def read_manifest(path: str | Path) -> list[AudioEntry]:
    """Entries of a manifest file or split folder, with paths resolved (see module docstring)."""
    manifest_path = resolve_manifest_path(path)
    entries = []
    with _open_text(manifest_path, "r") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = AudioEntry.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError) as error:
                raise ValueError(f"{manifest_path}:{line_number}: not a manifest entry: {error}") from error
            resolved = _resolve_audio_path(entry.path, manifest_path.parent)
            entries.append(AudioEntry(**{**asdict(entry), "path": resolved}))
    return entries


def write_manifest(path: str | Path, entries: list[AudioEntry]) -> None:
    """Write entries as JSONL (gzipped when the name ends in .gz). Fields that are None are left out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps gzipped manifests byte-identical across runs.
    opener = (lambda: gzip.GzipFile(path, "wb", mtime=0)) if path.suffix == ".gz" else (lambda: open(path, "wb"))
    with opener() as file:
        for entry in entries:
            line = {key: value for key, value in asdict(entry).items() if value is not None}
            file.write((json.dumps(line, sort_keys=True) + "\n").encode("utf-8"))


def sidecar_path(audio_path: str | Path) -> Path:
    return Path(audio_path).with_suffix(".json")


def read_sidecar(audio_path: str | Path) -> dict:
    """The metadata dict stored beside an audio file, or {} when there is none."""
    path = sidecar_path(audio_path)
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as file:
        metadata = json.load(file)
    if not isinstance(metadata, dict):
        raise ValueError(f"sidecar {path} must hold a JSON object, got {type(metadata).__name__}")
    return metadata


def write_sidecar(audio_path: str | Path, metadata: dict) -> None:
    with open(sidecar_path(audio_path), "w", encoding="utf-8") as file:
        json.dump(metadata, file, sort_keys=True, indent=1)
        file.write("\n")
