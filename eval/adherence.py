"""Prompt adherence: does the LM's audio have the key, tempo and instrument its caption names, and how sure are we?

    python -m eval.adherence checkpoint=outputs/demo/lm duration=4 samples_per_caption=4 out_dir=outputs/adherence

Captions. Every clip of the held-out splits in caption_splits (test, then valid; the first num_captions of them,
all when null) gives its sidecar caption (the description, else a sentence of its fields) and its targets: key,
bpm, instrument; the valid split is only scored during training, never trained on. A demo-sized split has a
handful of clips, so `recombined_captions` more are drawn from the held-out fields: key x instrument x bpm
combinations of values those clips carry (instruments only where the training split has them, so the classifier
can name them) that no held-out clip has, each at most once, picked with `seed`, written as built sentences
("A piece played on organ in E minor at 78 bpm."). They have no real audio, so the `real` row is held-out clips
only.

Samples. Each caption is generated samples_per_caption times per row with distinct seeds, in batches of
batch_size; clip i of a row is sample j = i // N of caption c = i % N (N captions) and is generated with seed
item_seeds(seed, N * samples_per_caption)[i], the same in every row. Its audio depends only on (seed, caption,
i), not on the batch (pipeline.py), and raising samples_per_caption keeps the earlier samples' audio. Rows: one
per guidance scale in cfg_coefs and one from the null condition (unconditional, the chance level to beat).

Metrics, each clip (eval.key_tempo, eval.instrument) against its caption's targets:
- key: exact (same tonic and mode) and lenient (also parallel, relative or fifth-related: key_matches);
- tempo: the estimate is within tempo.tolerance (8%) of the caption's bpm, of twice it or of half it;
- instrument: the classifier, trained here on windows of train_manifest's clips, names the caption's instrument;
  with `classifier_audio: codec` it learns from those clips after a round trip through the LM's codec (encoded and
  decoded), the only timbres generated audio can have, instead of the clips themselves;
- Fréchet distance of the classifier's embeddings of the row's clips to those of the real windows.
Each rate comes with n (the clips whose target names that attribute) and its Wilson interval at `confidence`
(eval.stats); each guided row is compared with the unconditional one per metric: do the intervals overlap, and
how many samples per row would the same rates need to separate. The Fréchet distance has n only: it is biased
upwards at small n, and a bootstrap of it, whose resamples repeat clips, is biased further, so its percentile
interval misses even the point estimate (docs/adherence.md); compare it only between rows of equal n.
The `real` row measures every full `duration`-second window of the held-out captioned clips: it validates the
estimators, and its instrument column is the classifier's held-out accuracy; its windows of one clip are not
independent, so its intervals are narrower than they should be. The `codec` row (`codec_row`) measures the same
windows after a round trip through the codec: what a generated row could reach if the LM sampled the held-out
clips' own codes, the ceiling of the generated rows.

Writes out_dir/adherence.md (the tables), out_dir/adherence.json (parameters, rows, comparisons, every clip
with its caption index, sample and seed), out_dir/generated/<row>/<caption>_<sample>.wav and
out_dir/instrument_classifier.pt, reused by a later run into the same out_dir when the training clips and
instrument config are unchanged. Bad input is one line on stderr and exit 1.
"""
import itertools
import json
import random
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import hydra
import torch
import transformers
from omegaconf import DictConfig
from torch import Tensor

from builders import build_codec_backend, build_decode_backend, build_generation, plain
from data.audio import AudioReadError, convert_audio, limit_peak, read_audio, write_wav
from data.captions import CaptionConfig, make_caption
from data.manifest import read_manifest, read_sidecar
from eval.frechet import frechet_distance_of_sets
from eval.instrument import (InstrumentClassifier, InstrumentConfig, LogMelStatistics, fingerprint,
                             load_cached_classifier, save_classifier, train_classifier)
from eval.key_tempo import (KeyConfig, TempoConfig, bpm_matches, estimate_bpm, estimate_key, key_label,
                            key_matches, parse_key)
from eval.round_trip import codec_round_trip, weights_digest
from eval.stats import Rate, intervals_overlap, rate_of, samples_to_separate, z_value
from generate import pick_device
from pipeline import GenerationPipeline, item_seeds

CLASSIFIER_FILE = "instrument_classifier.pt"
CAPTION_SPLITS = ("test", "valid")  # held-out splits; the training split's captions are memorised, not followed
RECOMBINED = "recombined"  # the source of a caption drawn from held-out fields
RATES = ("key_exact", "key_lenient", "tempo", "instrument")
RATE_TITLES = ("key exact", "key lenient", "tempo (8%, x2, /2)", "instrument")
CLASSIFIER_AUDIO = ("real", "codec")  # what the instrument classifier learns from
EVERY_FIELD = CaptionConfig(description_prob=1.0)  # the description when there is one, else every field


@dataclass
class Target:
    """What a caption promises, from a sidecar; None where the sidecar does not say."""
    source: str  # "<split>/<file name>" of the held-out clip, or "recombined"
    path: str | None  # the held-out clip's audio; None for a recombined caption
    caption: str
    key: str | None
    bpm: float | None
    instrument: str | None


class ClipOrigin(NamedTuple):
    caption_index: int  # the target's index in the run's caption list
    sample: int  # generated: the sample of that caption; real: the window of that clip
    seed: int | None  # the generated clip's sampling seed; None for a real window


@dataclass
class Measurement:
    """One clip's estimates next to its target."""
    row: str
    caption_index: int
    sample: int
    seed: int | None
    source: str
    caption: str
    target_key: str | None
    key: str
    target_bpm: float | None
    bpm: float
    target_instrument: str | None
    instrument: str


@dataclass(frozen=True)
class Distance:
    distance: float
    n: int  # the row's clips


def check_request(cfg: DictConfig) -> None:
    """Refuse what cannot run, naming the key, before anything is loaded or written."""
    if cfg.num_captions is not None and (not isinstance(cfg.num_captions, int) or cfg.num_captions < 1):
        raise ValueError(f"num_captions must be an integer >= 1 (or null: every held-out clip), got {cfg.num_captions}")
    if not isinstance(cfg.samples_per_caption, int) or cfg.samples_per_caption < 1:
        raise ValueError(f"samples_per_caption must be an integer >= 1, got {cfg.samples_per_caption}")
    if not isinstance(cfg.recombined_captions, int) or cfg.recombined_captions < 0:
        raise ValueError(f"recombined_captions must be an integer >= 0, got {cfg.recombined_captions}")
    splits = list(cfg.caption_splits)
    if not splits or len(set(splits)) != len(splits) or not set(splits) <= set(CAPTION_SPLITS):
        raise ValueError(f"caption_splits must list one or both of {list(CAPTION_SPLITS)}, got {splits}")
    z_value(cfg.confidence)
    if cfg.duration < 120 / cfg.tempo.min_bpm:
        raise ValueError(f"duration must be >= two beats at tempo.min_bpm={cfg.tempo.min_bpm}: "
                         f"{120 / cfg.tempo.min_bpm:g} s, got {cfg.duration}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.classifier_audio not in CLASSIFIER_AUDIO:
        raise ValueError(f"classifier_audio must be one of {list(CLASSIFIER_AUDIO)}, got {cfg.classifier_audio!r}")
    if not cfg.cfg_coefs and not cfg.unconditional:
        raise ValueError("nothing to generate: give cfg_coefs='[1,3]' or unconditional=true")


def _read_split(key: str, manifest: str | None) -> list:
    """The entries of the manifest that config key `key` names; a missing one is an error naming the key."""
    if manifest is None:
        raise ValueError(f"{key} is null and the LM run's data config has none: give {key}=PATH")
    try:
        return read_manifest(manifest)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{key}: {error}") from error


def held_out_targets(cfg: DictConfig, data: DictConfig) -> tuple[list[Target], dict[str, str]]:
    """The captions of the caption_splits' clips, in order, the first num_captions; and each split's manifest.
    `data`: the LM run's data config, whose manifests stand in for null test_manifest / valid_manifest."""
    targets, manifests = [], {}
    for split in cfg.caption_splits:
        key = f"{split}_manifest"
        manifests[key] = cfg[key] or data.get(key)
        for entry in _read_split(key, manifests[key]):
            metadata = read_sidecar(entry.path)
            caption = make_caption(metadata, EVERY_FIELD, random.Random(0))
            if not caption:
                raise ValueError(f"{entry.path} has no caption: its sidecar holds no description, key, bpm or "
                                 "instrument")
            bpm = metadata.get("bpm")
            targets.append(Target(source=f"{split}/{Path(entry.path).name}", path=entry.path, caption=caption,
                                  key=metadata.get("key"), bpm=None if bpm is None else float(bpm),
                                  instrument=metadata.get("instrument")))
    if not targets:
        raise ValueError(f"caption_splits {list(cfg.caption_splits)} hold no clips: {manifests}")
    return targets[:cfg.num_captions], manifests


def recombined_targets(held_out: list[Target], count: int, instruments: set[str], seed: int) -> list[Target]:
    """`count` captions naming a key, an instrument and a bpm that the held-out targets carry, in combinations
    none of them has, each drawn once with random.Random(seed). Instruments are those in `instruments` (what the
    classifier knows); a field no held-out target names is left out of every caption."""
    keys = sorted({target.key for target in held_out if target.key}) or [None]
    names = sorted({target.instrument for target in held_out if target.instrument in instruments}) or [None]
    bpms = sorted({target.bpm for target in held_out if target.bpm}) or [None]
    existing = {(target.key, target.instrument, target.bpm) for target in held_out} | {(None, None, None)}
    combinations = [fields for fields in itertools.product(keys, names, bpms) if fields not in existing]
    if count > len(combinations):
        raise ValueError(f"recombined_captions must be <= {len(combinations)}, the key x instrument x bpm "
                         f"combinations of the held-out captions that none of them has, got {count}")
    return [Target(source=RECOMBINED, path=None, key=key, bpm=bpm, instrument=instrument,
                   caption=make_caption({"key": key, "instrument": instrument, "bpm": bpm}, EVERY_FIELD,
                                        random.Random(0)))
            for key, instrument, bpm in random.Random(seed).sample(combinations, count)]


def clip_origins(num_captions: int, samples_per_caption: int, seed: int) -> list[ClipOrigin]:
    """Clip i of a row: sample i // num_captions of caption i % num_captions, with seed item_seeds(seed, total)[i]
    (sample-major, so sample j of caption c keeps its seed when samples_per_caption grows)."""
    total = num_captions * samples_per_caption
    return [ClipOrigin(index % num_captions, index // num_captions, clip_seed)
            for index, clip_seed in enumerate(item_seeds(seed, total))]


def read_windows(path: str, seconds: float, sample_rate: int) -> Tensor:
    """Every full, non-overlapping `seconds` window of a file, mono at sample_rate: [W, samples]."""
    wav, source_rate = read_audio(path)
    wav = convert_audio(wav, source_rate, sample_rate, channels=1)[0]  # [T]
    size = int(round(seconds * sample_rate))
    if len(wav) < size:
        raise ValueError(f"{path} is {len(wav) / sample_rate:.2f} s long, shorter than duration={seconds}")
    return wav[:len(wav) // size * size].reshape(-1, size)


def labelled_clips(train_manifest: str) -> dict[str, str]:
    """Audio path -> instrument of the training split's clips whose sidecar names one."""
    instruments = {entry.path: read_sidecar(entry.path).get("instrument")
                   for entry in _read_split("train_manifest", train_manifest)}
    return {path: instrument for path, instrument in instruments.items() if instrument}


def instrument_classifier(cfg: DictConfig, config: InstrumentConfig, labelled: dict[str, str], out_dir: Path,
                          features: LogMelStatistics, pipeline: GenerationPipeline) -> InstrumentClassifier:
    """The classifier cached in out_dir, or one trained now on windows of the labelled training clips (after a
    round trip through the pipeline's codec with classifier_audio=codec)."""
    sources = sorted(str(Path(path).resolve()) for path in labelled)
    if cfg.classifier_audio == "codec":
        sources.append(f"codec round trip: {pipeline.codec_dir}, weights sha256 {weights_digest(pipeline.codec)}")
    key = fingerprint(config, cfg.sample_rate, cfg.duration, sources)
    cached = load_cached_classifier(out_dir / CLASSIFIER_FILE, key, config)
    if cached is not None:
        return cached
    rows, labels = [], []
    with torch.no_grad():
        for path, instrument in labelled.items():
            windows = read_windows(path, cfg.duration, cfg.sample_rate)  # [W, samples]
            if cfg.classifier_audio == "codec":
                windows = torch.stack([codec_round_trip(pipeline.codec, window, cfg.sample_rate)
                                       for window in windows])
            rows.append(features(windows))
            labels += [instrument] * len(windows)
    classifier = train_classifier(torch.cat(rows), labels, config)
    save_classifier(classifier, out_dir / CLASSIFIER_FILE, key)
    return classifier


def measure(row: str, clips: Tensor, targets: list[Target], origins: list[ClipOrigin], cfg: DictConfig,
            classifier: InstrumentClassifier, features: LogMelStatistics) -> tuple[list[Measurement], Tensor]:
    """clips [N, samples] at cfg.sample_rate, clip i from origins[i] -> (measurements, embeddings [N, E])."""
    key_config, tempo_config = KeyConfig(**plain(cfg.key)), TempoConfig(**plain(cfg.tempo))
    with torch.no_grad():
        clip_features = features(clips)  # [N, 2M]
        embeddings = classifier.embed(clip_features)  # [N, E]
    instruments = classifier.predict(clip_features)
    measurements = []
    for clip, origin, instrument in zip(clips, origins, instruments):
        target = targets[origin.caption_index]
        measurements.append(Measurement(
            row=row, caption_index=origin.caption_index, sample=origin.sample, seed=origin.seed,
            source=target.source, caption=target.caption, target_key=target.key,
            key=key_label(estimate_key(clip, cfg.sample_rate, key_config)), target_bpm=target.bpm,
            bpm=round(estimate_bpm(clip, cfg.sample_rate, tempo_config), 2), target_instrument=target.instrument,
            instrument=instrument))
    return measurements, embeddings


def summarise(measurements: list[Measurement], tolerance: float, confidence: float,
              frechet: Distance | None) -> dict:
    """One row: its clip count, each agreement rate (over the clips whose target names that attribute) with its
    Wilson interval, and its Fréchet distance."""
    keyed = [(parse_key(m.key), parse_key(m.target_key)) for m in measurements if m.target_key is not None]
    keyed = [(estimate, target) for estimate, target in keyed if target is not None]
    hits = {
        "key_exact": [key_matches(estimate, target, lenient=False) for estimate, target in keyed],
        "key_lenient": [key_matches(estimate, target, lenient=True) for estimate, target in keyed],
        "tempo": [bpm_matches(m.bpm, m.target_bpm, tolerance) for m in measurements if m.target_bpm],
        "instrument": [m.instrument == m.target_instrument for m in measurements if m.target_instrument],
    }
    return {"clips": len(measurements), **{name: rate_of(hits[name], confidence) for name in RATES},
            "frechet": frechet}


def compare_with_unconditional(rows: dict[str, dict], confidence: float) -> dict[str, dict]:
    """For each guided row and rate: do its interval and the unconditional row's overlap, and how many samples
    per row would the same two rates need for non-overlapping intervals (None: equal rates)."""
    comparisons = {}
    for name, row in rows.items():
        if name in ("real", "codec", "uncond"):
            continue
        comparisons[name] = {}
        for metric in RATES:
            guided, unconditional = row[metric], rows["uncond"][metric]
            comparisons[name][metric] = None if guided is None or unconditional is None else {
                "overlap": intervals_overlap(guided, unconditional),
                "samples_to_separate": samples_to_separate(guided.rate, unconditional.rate, confidence)}
    return comparisons


def _rate_cell(rate: Rate | None) -> str:
    return "n/a" if rate is None else f"{rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}] n={rate.n}"


def markdown_table(rows: dict[str, dict]) -> str:
    lines = ["| row | clips | " + " | ".join(RATE_TITLES) + " | Fréchet (lower) |", "|---" * (len(RATES) + 3) + "|"]
    for name, row in rows.items():
        frechet = "n/a" if row["frechet"] is None else f"{row['frechet'].distance:.2f} n={row['frechet'].n}"
        lines.append(f"| {name} | {row['clips']} | " + " | ".join(_rate_cell(row[metric]) for metric in RATES)
                     + f" | {frechet} |")
    return "\n".join(lines) + "\n"


def _comparison_cell(comparison: dict | None) -> str:
    if comparison is None:
        return "n/a"
    if not comparison["overlap"]:
        return "separate"
    needed = comparison["samples_to_separate"]
    return "overlap, equal rates" if needed is None else f"overlap, {needed} samples per row to separate"


def comparison_table(comparisons: dict[str, dict]) -> str:
    names = list(comparisons)
    lines = ["| metric | " + " | ".join(f"{name} vs uncond" for name in names) + " |", "|---" * (len(names) + 1) + "|"]
    for metric, title in zip(RATES, RATE_TITLES):
        lines.append(f"| {title} | " + " | ".join(_comparison_cell(comparisons[name][metric]) for name in names)
                     + " |")
    return "\n".join(lines) + "\n"


def generate_rows(cfg: DictConfig, captions: list[str], pipeline: GenerationPipeline) -> dict[str, Tensor]:
    """Row name -> generated clips [N, samples], mono at cfg.sample_rate: cfg<coef> per cfg_coefs, then uncond.
    captions[i] (repeated per sample by the caller) is generated with seed item_seeds(cfg.seed, N)[i] in every
    row, in batches of cfg.batch_size."""
    generation, backend = build_generation(cfg), build_decode_backend(cfg)
    seeds = item_seeds(cfg.seed, len(captions))
    settings = [(f"cfg{coef:g}", replace(generation, cfg_coef=float(coef)), False) for coef in cfg.cfg_coefs]
    if cfg.unconditional:
        settings.append(("uncond", replace(generation, cfg_coef=1.0), True))
    rows = {}
    for name, config, null in settings:
        row_pipeline = GenerationPipeline(pipeline.lm, pipeline.pattern, pipeline.conditioner, pipeline.codec, config,
                                          backend)
        clips = []
        for first in range(0, len(captions), cfg.batch_size):
            batch = slice(first, first + cfg.batch_size)
            prompts = [None] * len(captions[batch]) if null else captions[batch]
            audio = row_pipeline.generate(prompts, cfg.duration, seeds=seeds[batch]).audio  # [B, C, samples]
            clips += [convert_audio(wav, pipeline.codec.sample_rate, cfg.sample_rate, channels=1)[0] for wav in audio]
        rows[name] = torch.stack(clips)
        print(f"generated {name}: {len(clips)} clips", flush=True)
    return rows


def evaluate(cfg: DictConfig) -> Path:
    """Generates, measures and writes the report. Returns out_dir."""
    check_request(cfg)
    device = pick_device(cfg.device)
    pipeline = GenerationPipeline.load(cfg.checkpoint, device, cfg.codec_dir, build_generation(cfg),
                                       codec_backend=build_codec_backend(cfg))
    data = pipeline.export_config.data
    train_manifest = cfg.train_manifest or data.train_manifest
    held_out, manifests = held_out_targets(cfg, data)
    labelled = labelled_clips(train_manifest)
    targets = held_out + recombined_targets(held_out, cfg.recombined_captions, set(labelled.values()), cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    instrument_config = InstrumentConfig(**plain(cfg.instrument))
    features = LogMelStatistics(instrument_config, cfg.sample_rate)
    classifier = instrument_classifier(cfg, instrument_config, labelled, out_dir, features, pipeline)

    real_clips, real_origins = [], []
    for index, target in enumerate(held_out):
        windows = read_windows(target.path, cfg.duration, cfg.sample_rate)  # [W, samples]
        real_clips.append(windows)
        real_origins += [ClipOrigin(index, window, None) for window in range(len(windows))]
    measurements, real_embeddings = measure("real", torch.cat(real_clips), targets, real_origins, cfg, classifier,
                                            features)
    rows = {"real": summarise(measurements, cfg.tempo.tolerance, cfg.confidence, frechet=None)}
    if cfg.codec_row:
        round_trips = torch.stack([codec_round_trip(pipeline.codec, window, cfg.sample_rate)
                                   for window in torch.cat(real_clips)])
        codec_measurements, embeddings = measure("codec", round_trips, targets, real_origins, cfg, classifier,
                                                 features)
        measurements += codec_measurements
        frechet = Distance(frechet_distance_of_sets(embeddings, real_embeddings), len(round_trips))
        rows["codec"] = summarise(codec_measurements, cfg.tempo.tolerance, cfg.confidence, frechet)
    origins = clip_origins(len(targets), cfg.samples_per_caption, cfg.seed)
    captions = [targets[origin.caption_index].caption for origin in origins]
    for name, clips in generate_rows(cfg, captions, pipeline).items():
        for origin, clip in zip(origins, clips):
            write_wav(out_dir / "generated" / name / f"{origin.caption_index:03d}_{origin.sample:02d}.wav",
                      limit_peak(clip[None]), cfg.sample_rate)
        row_measurements, embeddings = measure(name, clips, targets, origins, cfg, classifier, features)
        measurements += row_measurements
        frechet = Distance(frechet_distance_of_sets(embeddings, real_embeddings), len(clips))
        rows[name] = summarise(row_measurements, cfg.tempo.tolerance, cfg.confidence, frechet)
    comparisons = compare_with_unconditional(rows, cfg.confidence) if cfg.unconditional else {}

    table = markdown_table(rows)
    text = (f"Prompt adherence of {cfg.checkpoint}: {len(held_out)} held-out captions "
            f"({', '.join(map(str, manifests.values()))}) and {cfg.recombined_captions} recombined from their "
            f"fields, {cfg.samples_per_caption} samples each, {cfg.duration:g} s. Each rate: value "
            f"[{cfg.confidence:.0%} Wilson interval] n = the clips whose caption names that attribute. `real`: "
            f"{len(real_origins)} windows of the held-out clips themselves (the estimators' ceiling; instrument = "
            f"the classifier's held-out accuracy; classifier trained on {cfg.classifier_audio} audio)"
            + ("; `codec`: the same windows encoded and decoded by the codec (the generated rows' ceiling)"
               if cfg.codec_row else "")
            + f"; Fréchet distance to those windows on the instrument classifier's "
            f"embeddings (biased at small n: compare equal n only).\n\n"
            + table)
    if comparisons:
        text += ("\nGuided rows against the unconditional one: `separate` when the intervals do not overlap, else "
                 "how many samples per row the same two rates would need to separate.\n\n"
                 + comparison_table(comparisons))
    (out_dir / "adherence.md").write_text(text)
    report = {
        "parameters": {**plain(cfg), "checkpoint": str(Path(cfg.checkpoint).resolve()), **manifests,
                       "train_manifest": str(train_manifest)},
        "instrument_labels": classifier.labels,
        "rows": rows,
        "comparisons": comparisons,
        "captions": [asdict(target) for target in targets],
        "clips": [asdict(measurement) for measurement in measurements],
    }
    (out_dir / "adherence.json").write_text(json.dumps(report, indent=2, default=asdict))  # asdict: Rate, Distance
    print(text)
    return out_dir


@hydra.main(config_path="../configs", config_name="adherence", version_base="1.3")
def main(cfg: DictConfig) -> None:
    transformers.utils.logging.disable_progress_bar()  # stderr is for errors: one line each
    try:
        out_dir = evaluate(cfg)
    except (ValueError, FileNotFoundError, AudioReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
