"""The built-in default dataset: real compositions from music21's corpus, rendered offline with a GM SoundFont.

    python -m data.build_default --out DIR [--seed 0] [--sample-rate 24000] [--minutes 60] [--workers 2]

Bach chorales and folk tunes (Ryan's Mammoth Collection) are each played by one General-MIDI instrument at a
drawn tempo and transposition, then cut into clips. Every clip gets a caption and attributes from what is known
about it: the key is the score's (music21 key analysis) moved by the transposition, the bpm is the chosen
tempo (quarter notes per minute), the instrument is the GM program's. Splits are made per composition, so no
piece is in two splits. Output, in AudioCraft's layout (data.manifest reads it):

    DIR/build.json                          the build's config and totals
    DIR/{train,valid,test}/data.jsonl       manifest per split, paths relative to the split folder
    DIR/{split}/{style}_{piece}_{clip}.wav  16-bit mono clips, with a sidecar .json each

The same config gives byte-identical files: every random choice is drawn up front from the seed, and results
are written in plan order whatever the worker count.
"""
import argparse
import json
import logging
import multiprocessing
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from data.audio import normalize_rms, write_wav
from data.manifest import AudioEntry, write_manifest, write_sidecar
from data.synth import GM_INSTRUMENTS, Note, render_notes

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


@dataclass
class Style:
    name: str  # file-name prefix, e.g. "chorale"
    corpus: str  # music21 corpus collection passed to corpus.getComposer, e.g. "bach"
    extension: str  # only corpus files with this suffix are used (".mxl", ".abc")
    artist: str  # sidecar `artist`
    genre: str  # sidecar `genre`
    phrase: str  # caption noun phrase; "{form}" becomes the dance form named in the title ("reel"), else "tune"
    bpm_range: tuple[int, int]  # tempo drawn uniformly in [low, high], quarter notes per minute
    programs: list[int]  # GM programs drawn from (see data.synth.GM_INSTRUMENTS)

    def __post_init__(self):
        self.bpm_range = tuple(self.bpm_range)
        unknown = [program for program in self.programs if program not in GM_INSTRUMENTS]
        if unknown or not self.programs:
            raise ValueError(f"style {self.name!r}: programs must be a non-empty subset of "
                             f"{sorted(GM_INSTRUMENTS)}, got {self.programs}")
        if not 20 <= self.bpm_range[0] <= self.bpm_range[1]:
            raise ValueError(f"style {self.name!r}: bpm_range must be [low, high] with 20 <= low <= high, "
                             f"got {self.bpm_range}")


@dataclass
class DefaultDataConfig:
    """configs/data/default.yaml `build:` documents every field."""
    out: str
    seed: int
    sample_rate: int
    minutes: float
    clip_seconds: float
    min_clip_seconds: float
    max_clips_per_piece: int
    max_transposition: int
    loudness_db: float
    holdout_every: int
    workers: int
    soundfont: str
    styles: list[Style]

    def __post_init__(self):
        self.styles = [Style(**style) if isinstance(style, dict) else style for style in self.styles]
        if self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if not 0 < self.min_clip_seconds <= self.clip_seconds:
            raise ValueError(f"min_clip_seconds must be in (0, clip_seconds={self.clip_seconds}], "
                             f"got {self.min_clip_seconds}")
        if self.holdout_every < 3:
            raise ValueError(f"holdout_every must be >= 3, got {self.holdout_every}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class Rendition:
    """One composition with everything drawn for it: the unit of work, and of the train/valid/test split."""
    style: Style
    corpus_path: str  # relative to music21's corpus folder, e.g. "bach/bwv10.7.mxl"
    program: int
    bpm: int
    transposition: int  # semitones
    split: str


def key_name(tonic_pitch_class: int, mode: str) -> str:
    tonics = MAJOR_TONICS if mode == "major" else MINOR_TONICS
    return f"{tonics[tonic_pitch_class % 12]} {mode}"


def tempo_word(bpm: int) -> str:
    return "slow" if bpm < 80 else "moderate" if bpm < 112 else "fast"


def list_pieces(style: Style) -> list[str]:
    """Corpus paths of a style's pieces, sorted, one per composition (a score may ship in several formats)."""
    from music21 import corpus

    paths = [path for path in corpus.getComposer(style.corpus) if path.suffix == style.extension]
    by_name = {path.stem: path for path in sorted(paths)}
    return sorted(str(path.relative_to(path.parents[1])) for path in by_name.values())


def plan_renditions(config: DefaultDataConfig) -> list[Rendition]:
    """Every composition in a seeded order, styles interleaved, with its instrument, tempo, transposition, split."""
    rng = random.Random(config.seed)
    shuffled = []
    for style in config.styles:
        pieces = list_pieces(style)
        rng.shuffle(pieces)
        shuffled.append([(style, piece) for piece in pieces])
    interleaved = [pair for group in zip(*shuffled) for pair in group]  # round robin, to the shortest style
    renditions = []
    for index, (style, piece) in enumerate(interleaved):
        split = {1: "valid", 2: "test"}.get(index % config.holdout_every, "train")
        renditions.append(Rendition(
            style=style, corpus_path=piece, program=rng.choice(style.programs),
            bpm=rng.randint(*style.bpm_range),
            transposition=rng.randint(-config.max_transposition, config.max_transposition), split=split))
    return renditions


def score_notes(score, seconds_per_quarter: float, transposition: int) -> list[Note]:
    """Every sounding note of every part (ties merged, chords split), transposed; part 0 played louder."""
    notes = []
    for voice, part in enumerate(score.parts):
        for element in part.stripTies().flatten().notes:
            if element.duration.quarterLength <= 0:  # grace notes
                continue
            for pitch in element.pitches:
                notes.append(Note(onset=float(element.offset) * seconds_per_quarter,
                                  duration=float(element.duration.quarterLength) * seconds_per_quarter,
                                  pitch=pitch.midi + transposition, velocity=100 if voice == 0 else 80,
                                  voice=voice))
    return notes


def describe(rendition: Rendition, title: str, key: str) -> dict:
    """Sidecar metadata (AudioCraft MusicDataset fields, plus provenance) of a rendition's clips."""
    style = rendition.style
    named_form = " ".join(re.findall(r"[a-z]+", title.rsplit("--", 1)[1].lower())) if "--" in title else ""
    form = named_form or "tune"
    phrase = style.phrase.format(form=form)
    instrument = GM_INSTRUMENTS[rendition.program]
    tempo = tempo_word(rendition.bpm)
    description = f"A {tempo} {phrase} played on {instrument} in {key}, {rendition.bpm} bpm."
    return {
        "title": title, "artist": style.artist, "description": description, "genre": style.genre,
        "moods": [{"slow": "calm", "moderate": "steady", "fast": "lively"}[tempo],
                  "bright" if key.endswith("major") else "somber"],
        "keywords": sorted({*phrase.lower().split(), instrument}), "instrument": instrument, "key": key,
        "bpm": rendition.bpm, "source": f"music21 corpus {rendition.corpus_path}", "gm_program": rendition.program,
        "transposition": rendition.transposition,
    }


def render_rendition(rendition: Rendition, config: DefaultDataConfig) -> tuple[list[np.ndarray], dict] | str:
    """(clips [T] float32, metadata) of one composition, or why it yields none."""
    from music21 import corpus, stream

    try:
        score = corpus.parse(rendition.corpus_path)
    except Exception as error:  # music21 raises many types on odd corpus files; one bad piece must not stop a build
        return f"music21 cannot parse it ({type(error).__name__}: {error})"
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    analysed = score.analyze("key")
    key = key_name(analysed.tonic.pitchClass + rendition.transposition, analysed.mode)
    notes = score_notes(score, seconds_per_quarter=60 / rendition.bpm, transposition=rendition.transposition)
    if not notes:
        return "no notes"
    audio = render_notes(notes, program=rendition.program, sample_rate=config.sample_rate,
                         soundfont=config.soundfont)
    audio = normalize_rms(torch.from_numpy(audio)[None], target_db=config.loudness_db)[0].numpy()
    clip_frames = int(config.clip_seconds * config.sample_rate)
    clips = [audio[start:start + clip_frames] for start in range(0, len(audio), clip_frames)]
    clips = [clip for clip in clips if len(clip) >= config.min_clip_seconds * config.sample_rate]
    if not clips:
        return f"shorter than min_clip_seconds={config.min_clip_seconds}"
    title = ((score.metadata.title if score.metadata is not None else None)
             or f"{rendition.style.phrase.format(form='tune')} {Path(rendition.corpus_path).stem}")
    metadata = describe(rendition, title=title.strip(), key=key)
    metadata["score_key"] = key_name(analysed.tonic.pitchClass, analysed.mode)
    return clips[:config.max_clips_per_piece], metadata


def _render_in_worker(job: tuple[Rendition, DefaultDataConfig]):
    torch.set_num_threads(1)  # no OpenMP pool in a forked child (and one thread per worker is the plan)
    return job[0], render_rendition(*job)


def write_clips(folder: Path, rendition: Rendition, clips: list[np.ndarray], metadata: dict,
                config: DefaultDataConfig) -> list[AudioEntry]:
    """Write one piece's clips with their sidecars; manifest entries carry paths relative to `folder`."""
    stem = f"{rendition.style.name}_{Path(rendition.corpus_path).stem.replace('.', '-')}"
    entries = []
    for clip_index, clip in enumerate(clips):
        path = folder / f"{stem}_{clip_index}.wav"
        write_wav(path, torch.from_numpy(clip)[None], config.sample_rate)
        write_sidecar(path, {**metadata, "name": path.stem, "clip_index": clip_index,
                             "clip_start": clip_index * config.clip_seconds})
        entries.append(AudioEntry(path=path.name, duration=len(clip) / config.sample_rate,
                                  sample_rate=config.sample_rate, channels=1,
                                  amplitude=round(float(np.abs(clip).max()), 6)))
    return entries


def build_default(config: DefaultDataConfig) -> dict:
    """Render the dataset into config.out (replacing an earlier build there). Returns the build summary."""
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not (out / "build.json").is_file():
        raise FileExistsError(f"out={out} is a non-empty folder that is not a default-data build: "
                              "refusing to replace it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    renditions = plan_renditions(config)
    target_frames = int(config.minutes * 60 * config.sample_rate)
    entries = {split: [] for split in SPLITS}
    total_frames, skipped = 0, 0
    jobs = [(rendition, config) for rendition in renditions]
    # fork: workers inherit the imported music21 and torch instead of importing them again (seconds each).
    pool = multiprocessing.get_context("fork").Pool(config.workers) if config.workers > 1 else None
    try:
        results = pool.imap(_render_in_worker, jobs) if pool else map(_render_in_worker, jobs)
        for rendition, result in results:
            if isinstance(result, str):
                logger.warning("skipping %s: %s", rendition.corpus_path, result)
                skipped += 1
                continue
            clips, metadata = result
            written = write_clips(partial / rendition.split, rendition, clips, metadata, config)
            entries[rendition.split] += written
            total_frames += sum(round(entry.duration * config.sample_rate) for entry in written)
            if total_frames >= target_frames:  # whole pieces only: a build may pass `minutes` by a piece
                break
    finally:
        if pool:
            pool.terminate()
    if total_frames < target_frames:
        logger.warning("the corpus ran out at %.1f of %.1f minutes", total_frames / config.sample_rate / 60,
                       config.minutes)
    for split in SPLITS:
        write_manifest(partial / split / "data.jsonl", entries[split])
    # Neither where it was built nor how many processes built it changes the data: both stay out of build.json.
    recipe = {key: value for key, value in asdict(config).items() if key not in ("out", "workers")}
    summary = {"config": recipe, "skipped_pieces": skipped,
               "hours": round(total_frames / config.sample_rate / 3600, 4),
               "clips": {split: len(entries[split]) for split in SPLITS}}
    (partial / "build.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return summary


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "default.yaml"


def load_build_config(path: str | Path = DEFAULT_CONFIG, programs: list[int] | None = None,
                      **overrides) -> DefaultDataConfig:
    """The `build:` section of a data config, with keyword overrides (None values are ignored). `programs` replaces
    every style's instruments: a subset played on other instruments (docs/finetune.md renders one for a fine-tune)."""
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(OmegaConf.load(path), resolve=True)["build"]
    section.update({key: value for key, value in overrides.items() if value is not None})
    if programs is not None:
        section["styles"] = [{**style, "programs": list(programs)} for style in section["styles"]]
    return DefaultDataConfig(**section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="data config whose build: section is used")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--sample-rate", type=int, choices=(24000, 32000))
    parser.add_argument("--minutes", type=float, help="total audio to render")
    parser.add_argument("--workers", type=int, help="render processes")
    parser.add_argument("--programs", type=int, nargs="+", help="GM programs every style is played on instead of "
                        "its own (e.g. 21: accordion only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        config = load_build_config(args.config, out=args.out, seed=args.seed, sample_rate=args.sample_rate,
                                   minutes=args.minutes, workers=args.workers, programs=args.programs)
        summary = build_default(config)
    except (ImportError, FileExistsError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    logger.info("built %.2f h (%s clips) in %.0f s -> %s", summary["hours"], summary["clips"],
                time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
