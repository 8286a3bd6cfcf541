"""Build a manifest from a folder of audio: `python -m data.scan DIR --out manifest.jsonl`.

Every file is decoded once (to catch corrupt data behind a valid header and to record its peak). Files that
cannot be read, hold no samples, are shorter than --min-duration or sampled below --min-sample-rate are
skipped with a logged reason; the scan itself never stops on a bad file.
"""
import argparse
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data.audio import AUDIO_EXTENSIONS, AudioReadError, read_audio
from data.manifest import AudioEntry, write_manifest

logger = logging.getLogger(__name__)


@dataclass
class ScanResult:
    entries: list[AudioEntry]
    skipped: Counter = field(default_factory=Counter)  # reason -> number of files

    def summary(self) -> str:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        hours = sum(entry.duration for entry in self.entries) / 3600
        return (f"kept {len(self.entries)} files ({hours:.2f} h), skipped {sum(self.skipped.values())}"
                + (f" ({reasons})" if reasons else ""))


def find_audio_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file())


def scan_file(path: Path, min_duration: float, min_sample_rate: int) -> AudioEntry | str:
    """The manifest entry of one file, or the reason it is skipped."""
    try:
        wav, sample_rate = read_audio(path)
    except AudioReadError:
        return "unreadable"
    if wav.shape[-1] == 0:
        return "empty"
    if sample_rate < min_sample_rate:
        return f"sample rate below {min_sample_rate} Hz"
    duration = wav.shape[-1] / sample_rate
    if duration < min_duration:
        return f"shorter than {min_duration} s"
    return AudioEntry(path=str(path.resolve()), duration=duration, sample_rate=sample_rate,
                      channels=wav.shape[0], amplitude=round(wav.abs().max().item(), 6))


def scan_folder(folder: str | Path, min_duration: float = 0.0, min_sample_rate: int = 8000,
                progress: bool = False) -> ScanResult:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"folder {folder} is not a directory")
    result = ScanResult(entries=[])
    for path in tqdm(find_audio_files(folder), desc="scan", unit="file", disable=not progress):
        outcome = scan_file(path, min_duration=min_duration, min_sample_rate=min_sample_rate)
        if isinstance(outcome, str):
            logger.warning("skipping %s: %s", path, outcome)
            result.skipped[outcome] += 1
        else:
            result.entries.append(outcome)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder searched recursively for " + "/".join(AUDIO_EXTENSIONS))
    parser.add_argument("--out", type=Path, required=True, help="manifest to write (.jsonl or .jsonl.gz)")
    parser.add_argument("--min-duration", type=float, default=0.0, help="skip files shorter than this (s)")
    parser.add_argument("--min-sample-rate", type=int, default=8000, help="skip files sampled below this (Hz)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = scan_folder(args.folder, min_duration=args.min_duration, min_sample_rate=args.min_sample_rate,
                             progress=True)
    except NotADirectoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_manifest(args.out, result.entries)
    logger.info("%s -> %s", result.summary(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
