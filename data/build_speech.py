"""The built-in speech dataset: sentences spoken by espeak-ng in several English voices, rates and pitches.

    python -m data.build_speech --out DIR [--seed 0] [--minutes 60] [--workers 2]
        [--min-words 4 --max-words 16] [--word-list-prob 0.2] [--rate-range 120 230]
        [--speakers en-us+m3 en-gb+f4 ...] [--holdout-speakers en-gb-x-gbclan+m3 ...]   (defaults: configs/data/speech.yaml)

Each sentence (data.speech_text: a small grammar and the wamerican word list) is spoken once by a speaker, an
espeak-ng voice (accent) plus a variant (timbre), at a drawn rate and pitch; espeak-ng's 22.05 kHz output is
resampled to the configured rate and loudness-normalised. Splits are made per sentence, so no sentence is in two
splits; every test sentence is also spoken by one of the held-out speakers, who say nothing in train or valid,
so test holds both unseen sentences in known voices and the same sentences in unknown ones. Output, in
AudioCraft's layout (data.manifest reads it):

    DIR/build.json                          the build's config, espeak-ng version and totals
    DIR/{train,valid,test}/data.jsonl       manifest per split, paths relative to the split folder
    DIR/{split}/{sentence}_{speaker}.wav    16-bit mono clips, with a sidecar .json each (transcript in `text`)

The same config, espeak-ng version and word list give byte-identical files: every random choice is drawn up
front from the seed, and results are written in plan order whatever the worker count.
"""
import argparse
import json
import logging
import math
import multiprocessing
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from data.audio import normalize_rms, resample, write_wav
from data.manifest import AudioEntry, write_manifest, write_sidecar
from data.speech_text import draw_sentence, normalize_text, read_word_list

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
ESPEAK = "espeak-ng"
ESPEAK_RATE_RANGE = (80, 450)  # words per minute espeak-ng accepts for -s
ESPEAK_PITCH_RANGE = (0, 99)  # -p


@dataclass
class SpeechDataConfig:
    """configs/data/speech.yaml `build:` documents every field."""
    out: str
    seed: int
    sample_rate: int
    minutes: float
    min_words: int
    max_words: int
    rate_range: tuple[int, int]
    pitch_range: tuple[int, int]
    loudness_db: float
    holdout_every: int
    workers: int
    word_list: str
    word_list_prob: float
    voices: dict[str, str]
    variants: dict[str, str]
    speakers: list[str]
    holdout_speakers: list[str]

    def __post_init__(self):
        self.rate_range, self.pitch_range = tuple(self.rate_range), tuple(self.pitch_range)
        if self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")
        if not 3 <= self.min_words <= self.max_words:
            raise ValueError(f"min_words and max_words must satisfy 3 <= min_words <= max_words, "
                             f"got {self.min_words} and {self.max_words}")
        for name, (low, high), (lowest, highest) in (("rate_range", self.rate_range, ESPEAK_RATE_RANGE),
                                                     ("pitch_range", self.pitch_range, ESPEAK_PITCH_RANGE)):
            if not lowest <= low <= high <= highest:
                raise ValueError(f"{name} must be [low, high] within espeak-ng's [{lowest}, {highest}], "
                                 f"got {[low, high]}")
        if self.holdout_every < 3:
            raise ValueError(f"holdout_every must be >= 3, got {self.holdout_every}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 0 <= self.word_list_prob <= 1:
            raise ValueError(f"word_list_prob must be in [0, 1], got {self.word_list_prob}")
        if not self.speakers:
            raise ValueError("speakers must list at least one 'voice+variant'")
        for field_name in ("speakers", "holdout_speakers"):
            for speaker in getattr(self, field_name):
                voice, variant = split_speaker(speaker)
                if voice not in self.voices or variant not in self.variants:
                    raise ValueError(f"{field_name}: speaker {speaker!r} needs its voice {voice!r} in `voices` "
                                     f"and its variant {variant!r} in `variants` (their words make the caption)")
        shared = sorted(set(self.speakers) & set(self.holdout_speakers))
        if shared:
            raise ValueError(f"holdout_speakers must not be in speakers, got {shared} in both")


@dataclass(frozen=True)
class Utterance:
    """One clip to render: a sentence, who says it and how. The sentence is the unit of the split."""
    sentence_index: int  # plan order of the sentence; file-name prefix
    text: str
    speaker: str  # "voice+variant", espeak-ng's -v argument
    rate: int  # words per minute (-s)
    pitch: int  # 0-99 (-p)
    split: str
    held_out_speaker: bool  # a holdout speaker: heard in test only


def split_speaker(speaker: str) -> tuple[str, str]:
    """'en-gb-scotland+f2' -> ('en-gb-scotland', 'f2')."""
    voice, plus, variant = speaker.partition("+")
    if not (voice and plus and variant):
        raise ValueError(f"speaker must be 'voice+variant' (e.g. 'en-us+f2'), got {speaker!r}")
    return voice, variant


def espeak_version() -> str:
    """espeak-ng's version line; RuntimeError when it is not installed."""
    if shutil.which(ESPEAK) is None:
        raise RuntimeError(f"{ESPEAK} is not installed (Debian package espeak-ng: apt-get install espeak-ng)")
    return subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout.split(
        "Data at")[0].strip()


def espeak_voices() -> tuple[set[str], set[str]]:
    """(voice names -v accepts: languages and voice names, variant names +variant accepts) of the installed
    espeak-ng, from `--voices` and `--voices=variant`."""
    def table(argument: str) -> list[list[str]]:
        listing = subprocess.run([ESPEAK, argument], capture_output=True, text=True, check=True).stdout
        return [line.split() for line in listing.splitlines()[1:] if line.strip()]

    voices = {name for row in table("--voices") for name in (row[1], row[3])}
    variants = {row[4].split("/", 1)[1] for row in table("--voices=variant") if row[4].startswith("!v/")}
    return voices, variants


def check_speakers(config: SpeechDataConfig) -> None:
    """Refuse, before anything is rendered, a speaker whose voice or variant espeak-ng lacks (espeak-ng itself
    falls back to its default voice for an unknown variant, silently)."""
    voices, variants = espeak_voices()
    for speaker in [*config.speakers, *config.holdout_speakers]:
        voice, variant = split_speaker(speaker)
        if voice not in voices:
            raise ValueError(f"speaker {speaker!r}: espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")
        if variant not in variants:
            raise ValueError(f"speaker {speaker!r}: espeak-ng has no variant {variant!r} "
                             "(see `espeak-ng --voices=variant`)")


def plan_utterances(config: SpeechDataConfig, dictionary: list[str]) -> list[list[Utterance]]:
    """Sentences in seeded order, each with its utterances (two in test when there are holdout speakers): one
    per second of `minutes`, which lasts unless clips of 4 or more words average under a second."""
    rng = random.Random(config.seed)
    num_sentences = math.ceil(config.minutes * 60) + config.holdout_every
    seen, plan = set(), []
    while len(plan) < num_sentences:
        text = draw_sentence(rng, config.min_words, config.max_words, dictionary, config.word_list_prob)
        if text in seen:
            continue
        seen.add(text)
        index = len(plan)
        split = {1: "valid", 2: "test"}.get(index % config.holdout_every, "train")
        speakers = [(rng.choice(config.speakers), False)]
        if split == "test" and config.holdout_speakers:
            speakers.append((rng.choice(config.holdout_speakers), True))
        plan.append([Utterance(sentence_index=index, text=text, speaker=speaker, rate=rng.randint(*config.rate_range),
                               pitch=rng.randint(*config.pitch_range), split=split, held_out_speaker=held_out)
                     for speaker, held_out in speakers])
    return plan


def speak(text: str, speaker: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of `text`: (samples [T] float32 in [-1, 1], sample_rate). The final sentence pause is
    left out (-z), so a clip ends where the speech does. `text` must already be normalised (the transcript is
    what is spoken): empty text or characters outside the set are refused by normalize_text, naming them."""
    if normalize_text(text) != text:
        raise ValueError(f"text must be normalised (data.speech_text.normalize_text) before it is spoken: got "
                         f"{text!r}, normalised {normalize_text(text)!r}")
    result = subprocess.run([ESPEAK, "-v", speaker, "-s", str(rate), "-p", str(pitch), "-z", "--stdout", text],
                            capture_output=True, check=False)
    wav = result.stdout
    if result.returncode != 0 or wav[:4] != b"RIFF" or wav[36:40] != b"data":
        raise RuntimeError(f"espeak-ng failed on speaker {speaker!r}, text {text!r}: "
                           f"{result.stderr.decode(errors='replace').strip() or 'no WAV on stdout'}")
    channels, sample_rate = struct.unpack("<HI", wav[22:28])
    if channels != 1 or wav[34:36] != b"\x10\x00":
        raise RuntimeError(f"espeak-ng wrote {channels} channels of {wav[34]} bits; 16-bit mono expected")
    # --stdout cannot know the length up front, so the header's sizes are placeholders: read to the end.
    samples = np.frombuffer(wav[44:len(wav) - len(wav) % 2], dtype="<i2").astype(np.float32) / 32768
    return samples, sample_rate


def render_utterance(utterance: Utterance, config: SpeechDataConfig) -> np.ndarray:
    """The clip [T] float32 at config.sample_rate, at config.loudness_db RMS."""
    samples, sample_rate = speak(utterance.text, utterance.speaker, utterance.rate, utterance.pitch)
    wav = resample(torch.from_numpy(samples)[None], sample_rate, config.sample_rate)  # [1, T]
    return normalize_rms(wav, target_db=config.loudness_db)[0].numpy()


def _render_in_worker(job: tuple[list[Utterance], SpeechDataConfig]) -> list[np.ndarray]:
    torch.set_num_threads(1)  # no OpenMP pool in a forked child (and one thread per worker is the plan)
    utterances, config = job
    return [render_utterance(utterance, config) for utterance in utterances]


def rate_words(rate: int) -> str:
    return "slowly" if rate < 150 else "quickly" if rate > 200 else "at an even pace"


def pitch_word(pitch: int) -> str:
    return "low" if pitch < 40 else "high" if pitch > 60 else "medium"


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def describe(utterance: Utterance, config: SpeechDataConfig) -> dict:
    """Sidecar metadata of a clip: the transcript, the speaker's facts and a caption built from them."""
    voice, variant = split_speaker(utterance.speaker)
    accent, person = config.voices[voice], config.variants[variant]
    description = (f"{article(person).capitalize()} {person} with {article(accent)} {accent} accent speaking "
                   f"{rate_words(utterance.rate)} in a {pitch_word(utterance.pitch)} voice.")
    return {"text": utterance.text, "words": len(utterance.text.split()), "description": description,
            "speaker": utterance.speaker, "voice": voice, "variant": variant, "accent": accent, "person": person,
            "rate": utterance.rate, "pitch": utterance.pitch, "held_out_speaker": utterance.held_out_speaker,
            "sentence_index": utterance.sentence_index}


def write_clip(folder: Path, utterance: Utterance, clip: np.ndarray, config: SpeechDataConfig) -> AudioEntry:
    """Write one clip with its sidecar; the manifest entry's path is relative to `folder`."""
    path = folder / f"{utterance.sentence_index:05d}_{re.sub('[^a-z0-9-]', '_', utterance.speaker.lower())}.wav"
    write_wav(path, torch.from_numpy(clip)[None], config.sample_rate)
    duration = len(clip) / config.sample_rate
    write_sidecar(path, {**describe(utterance, config), "name": path.stem, "duration": duration})
    return AudioEntry(path=path.name, duration=duration, sample_rate=config.sample_rate, channels=1,
                      amplitude=round(float(np.abs(clip).max()), 6))


def build_speech(config: SpeechDataConfig) -> dict:
    """Render the dataset into config.out (replacing an earlier speech build there). Returns the build summary.

    Everything is written to `<out>.partial` first and renamed at the end: an interrupted or failed build leaves
    no half-written `out`."""
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not (out / "build.json").is_file():
        raise FileExistsError(f"out={out} is a non-empty folder that is not a speech-data build: "
                              "refusing to replace it")
    version = espeak_version()
    check_speakers(config)
    dictionary = read_word_list(config.word_list) if config.word_list_prob > 0 else []
    plan = plan_utterances(config, dictionary)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    target_frames = int(config.minutes * 60 * config.sample_rate)
    entries = {split: [] for split in SPLITS}
    total_frames = 0
    jobs = [(utterances, config) for utterances in plan]
    pool = multiprocessing.get_context("fork").Pool(config.workers) if config.workers > 1 else None
    try:
        results = pool.imap(_render_in_worker, jobs) if pool else map(_render_in_worker, jobs)
        for utterances, clips in zip(plan, results):
            for utterance, clip in zip(utterances, clips):
                entries[utterance.split].append(write_clip(partial / utterance.split, utterance, clip, config))
                total_frames += len(clip)
            if total_frames >= target_frames:  # whole sentences only: a build may pass `minutes` by one
                break
        if total_frames < target_frames:
            raise RuntimeError(f"the plan ran out at {total_frames / config.sample_rate / 60:.1f} of "
                               f"{config.minutes} minutes")
        for split in SPLITS:
            write_manifest(partial / split / "data.jsonl", entries[split])
        # Neither where it was built nor how many processes built it changes the data: both stay out of build.json.
        recipe = {key: value for key, value in asdict(config).items() if key not in ("out", "workers")}
        summary = {"config": recipe, "espeak": version, "word_list_words": len(dictionary),
                   "hours": round(total_frames / config.sample_rate / 3600, 4),
                   "clips": {split: len(entries[split]) for split in SPLITS},
                   "sentences": {split: len({entry.path.split("_")[0] for entry in entries[split]})
                                 for split in SPLITS}}
        (partial / "build.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        if pool:
            pool.terminate()
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return summary


SPEECH_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "speech.yaml"


def load_build_config(path: str | Path = SPEECH_CONFIG, **overrides) -> SpeechDataConfig:
    """The `build:` section of a speech data config, with keyword overrides (None values are ignored)."""
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(OmegaConf.load(path), resolve=True)["build"]
    section.update({key: value for key, value in overrides.items() if value is not None})
    return SpeechDataConfig(**section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=SPEECH_CONFIG, help="data config whose build: section is used")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--minutes", type=float, help="total audio to render")
    parser.add_argument("--workers", type=int, help="render processes")
    parser.add_argument("--min-words", type=int, help="shortest sentence, in words")
    parser.add_argument("--max-words", type=int, help="longest sentence, in words")
    parser.add_argument("--word-list-prob", type=float, help="share of word-list sentences (0: grammar only)")
    parser.add_argument("--rate-range", type=int, nargs=2, metavar=("LOW", "HIGH"),
                        help="espeak-ng words per minute, drawn per clip")
    parser.add_argument("--speakers", nargs="+", metavar="VOICE+VARIANT", help="the speakers heard in every split")
    parser.add_argument("--holdout-speakers", nargs="*", metavar="VOICE+VARIANT",
                        help="speakers heard in test only (none when given without a value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        config = load_build_config(args.config, out=args.out, seed=args.seed, minutes=args.minutes,
                                   workers=args.workers, min_words=args.min_words, max_words=args.max_words,
                                   word_list_prob=args.word_list_prob, rate_range=args.rate_range,
                                   speakers=args.speakers, holdout_speakers=args.holdout_speakers)
        summary = build_speech(config)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    logger.info("built %.2f h (%s clips) in %.0f s -> %s", summary["hours"], summary["clips"],
                time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
