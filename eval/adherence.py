"""Prompt adherence: does the LM's audio have the key, tempo and instrument its caption names?

    python -m eval.adherence checkpoint=outputs/demo/lm num_captions=8 duration=4 out_dir=outputs/adherence

The captions are the sidecar descriptions of the first num_captions clips of the held-out split (test_manifest);
the LM generates `duration` seconds for each, once per guidance scale in cfg_coefs and once from the null
condition (unconditional), all from the same seed. Every clip is then measured (eval.key_tempo,
eval.instrument) against the attributes of the clip the caption came from:
- key: exact (same tonic and mode) and lenient (also parallel, relative or fifth-related: key_matches);
- tempo: the estimate is within tempo.tolerance (8%) of the caption's bpm, of twice it or of half it;
- instrument: the classifier, trained here on windows of train_manifest's clips, names the caption's instrument;
- Fréchet distance of the classifier's embeddings of the row's clips to those of the real windows.
The `real` row measures the held-out clips themselves (every full `duration`-second window of the captioned
clips): it validates the estimators, and its instrument column is the classifier's held-out accuracy. The
unconditional row is the chance level a caption has to beat.

Writes out_dir/adherence.md (the table), out_dir/adherence.json (rows, per-clip estimates, parameters),
out_dir/generated/<row>/NNN.wav and out_dir/instrument_classifier.pt, reused by a later run into the same out_dir
when the training clips and instrument config are unchanged. Bad input is one line on stderr and exit 1.
"""
import json
import random
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import hydra
import torch
import transformers
from omegaconf import DictConfig
from torch import Tensor

from builders import build_decode_backend, build_generation, plain
from data.audio import AudioReadError, convert_audio, limit_peak, read_audio, write_wav
from data.captions import CaptionConfig, make_caption
from data.manifest import read_manifest, read_sidecar
from eval.frechet import frechet_distance_of_sets
from eval.instrument import (InstrumentClassifier, InstrumentConfig, LogMelStatistics, fingerprint,
                             load_cached_classifier, save_classifier, train_classifier)
from eval.key_tempo import (KeyConfig, TempoConfig, bpm_matches, estimate_bpm, estimate_key, key_label,
                            key_matches, parse_key)
from generate import pick_device
from pipeline import GenerationPipeline, item_seeds

CLASSIFIER_FILE = "instrument_classifier.pt"
METRICS = ("key_exact", "key_lenient", "tempo", "instrument", "frechet")


@dataclass
class Target:
    """What a caption promises, from its clip's sidecar; None where the sidecar does not say."""
    source: str  # the held-out clip's file name
    caption: str
    key: str | None
    bpm: float | None
    instrument: str | None


@dataclass
class Measurement:
    """One clip's estimates next to its target."""
    row: str
    source: str
    caption: str
    target_key: str | None
    key: str
    target_bpm: float | None
    bpm: float
    target_instrument: str | None
    instrument: str


def read_targets(manifest: str, count: int) -> list[Target]:
    """The first `count` clips of a split: their captions (the description, else a sentence of the fields)."""
    every_field = CaptionConfig(description_prob=1.0)
    targets = []
    for entry in read_manifest(manifest)[:count]:
        metadata = read_sidecar(entry.path)
        caption = make_caption(metadata, every_field, random.Random(0))
        if not caption:
            raise ValueError(f"{entry.path} has no caption: its sidecar holds no description, key, bpm or instrument")
        bpm = metadata.get("bpm")
        targets.append(Target(source=Path(entry.path).name, caption=caption, key=metadata.get("key"),
                              bpm=None if bpm is None else float(bpm), instrument=metadata.get("instrument")))
    return targets


def read_windows(path: str, seconds: float, sample_rate: int) -> Tensor:
    """Every full, non-overlapping `seconds` window of a file, mono at sample_rate: [W, samples]."""
    wav, source_rate = read_audio(path)
    wav = convert_audio(wav, source_rate, sample_rate, channels=1)[0]  # [T]
    size = int(round(seconds * sample_rate))
    if len(wav) < size:
        raise ValueError(f"{path} is {len(wav) / sample_rate:.2f} s long, shorter than duration={seconds}")
    return wav[:len(wav) // size * size].reshape(-1, size)


def instrument_classifier(cfg: DictConfig, config: InstrumentConfig, train_manifest: str, out_dir: Path,
                          features: LogMelStatistics) -> InstrumentClassifier:
    """The classifier cached in out_dir, or one trained now on windows of the train split's labelled clips."""
    instruments = {entry.path: read_sidecar(entry.path).get("instrument") for entry in read_manifest(train_manifest)}
    labelled = {path: instrument for path, instrument in instruments.items() if instrument}
    key = fingerprint(config, cfg.sample_rate, cfg.duration, sorted(str(Path(path).resolve()) for path in labelled))
    cached = load_cached_classifier(out_dir / CLASSIFIER_FILE, key, config)
    if cached is not None:
        return cached
    rows, labels = [], []
    with torch.no_grad():
        for path, instrument in labelled.items():
            windows = read_windows(path, cfg.duration, cfg.sample_rate)  # [W, samples]
            rows.append(features(windows))
            labels += [instrument] * len(windows)
    classifier = train_classifier(torch.cat(rows), labels, config)
    save_classifier(classifier, out_dir / CLASSIFIER_FILE, key)
    return classifier


def measure(row: str, clips: Tensor, targets: list[Target], cfg: DictConfig, classifier: InstrumentClassifier,
            features: LogMelStatistics) -> tuple[list[Measurement], Tensor]:
    """clips [N, samples] at cfg.sample_rate, one target each -> (measurements, embeddings [N, E])."""
    key_config, tempo_config = KeyConfig(**plain(cfg.key)), TempoConfig(**plain(cfg.tempo))
    with torch.no_grad():
        clip_features = features(clips)  # [N, 2M]
        embeddings = classifier.embed(clip_features)  # [N, E]
    instruments = classifier.predict(clip_features)
    measurements = [
        Measurement(row=row, source=target.source, caption=target.caption, target_key=target.key,
                    key=key_label(estimate_key(clip, cfg.sample_rate, key_config)), target_bpm=target.bpm,
                    bpm=round(estimate_bpm(clip, cfg.sample_rate, tempo_config), 2),
                    target_instrument=target.instrument, instrument=instrument)
        for clip, target, instrument in zip(clips, targets, instruments)
    ]
    return measurements, embeddings


def _rate(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def summarise(measurements: list[Measurement], tolerance: float, frechet: float | None) -> dict:
    """Agreement rates of one row; each over the clips whose target names that attribute."""
    keyed = [(parse_key(m.key), parse_key(m.target_key)) for m in measurements if m.target_key is not None]
    keyed = [(estimate, target) for estimate, target in keyed if target is not None]
    return {
        "clips": len(measurements),
        "key_exact": _rate([key_matches(estimate, target, lenient=False) for estimate, target in keyed]),
        "key_lenient": _rate([key_matches(estimate, target, lenient=True) for estimate, target in keyed]),
        "tempo": _rate([bpm_matches(m.bpm, m.target_bpm, tolerance) for m in measurements if m.target_bpm]),
        "instrument": _rate([m.instrument == m.target_instrument for m in measurements if m.target_instrument]),
        "frechet": frechet,
    }


def markdown_table(rows: dict[str, dict]) -> str:
    lines = ["| row | clips | key exact | key lenient | tempo (8%, x2, /2) | instrument | Fréchet (lower) |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        cells = ["n/a" if row[metric] is None else f"{row[metric]:.2f}" for metric in METRICS]
        lines.append(f"| {name} | {row['clips']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def generate_rows(cfg: DictConfig, captions: list[str], pipeline: GenerationPipeline) -> dict[str, Tensor]:
    """Row name -> generated clips [N, samples], mono at cfg.sample_rate: cfg<coef> per cfg_coefs, then uncond.
    Caption i is generated with seed item_seeds(cfg.seed, N)[i] in every row."""
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
    if cfg.num_captions < 1:
        raise ValueError(f"num_captions must be >= 1, got {cfg.num_captions}")
    if cfg.duration < 120 / cfg.tempo.min_bpm:
        raise ValueError(f"duration must be >= two beats at tempo.min_bpm={cfg.tempo.min_bpm}: "
                         f"{120 / cfg.tempo.min_bpm:g} s, got {cfg.duration}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if not cfg.cfg_coefs and not cfg.unconditional:
        raise ValueError("nothing to generate: give cfg_coefs='[1,3]' or unconditional=true")
    device = pick_device(cfg.device)
    pipeline = GenerationPipeline.load(cfg.checkpoint, device, cfg.codec_dir, build_generation(cfg))
    train_cfg = pipeline.export_config
    test_manifest = cfg.test_manifest or train_cfg.data.test_manifest
    train_manifest = cfg.train_manifest or train_cfg.data.train_manifest
    targets = read_targets(test_manifest, cfg.num_captions)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    instrument_config = InstrumentConfig(**plain(cfg.instrument))
    features = LogMelStatistics(instrument_config, cfg.sample_rate)
    classifier = instrument_classifier(cfg, instrument_config, train_manifest, out_dir, features)

    entries = {Path(entry.path).name: entry.path for entry in read_manifest(test_manifest)}
    real_clips, real_targets = [], []
    for target in targets:
        windows = read_windows(entries[target.source], cfg.duration, cfg.sample_rate)  # [W, samples]
        real_clips.append(windows)
        real_targets += [target] * len(windows)
    measurements, real_embeddings = measure("real", torch.cat(real_clips), real_targets, cfg, classifier, features)
    rows = {"real": summarise(measurements, cfg.tempo.tolerance, frechet=None)}
    for name, clips in generate_rows(cfg, [target.caption for target in targets], pipeline).items():
        for index, clip in enumerate(clips):
            write_wav(out_dir / "generated" / name / f"{index:03d}.wav", limit_peak(clip[None]), cfg.sample_rate)
        row_measurements, embeddings = measure(name, clips, targets, cfg, classifier, features)
        measurements += row_measurements
        rows[name] = summarise(row_measurements, cfg.tempo.tolerance,
                               frechet=frechet_distance_of_sets(embeddings, real_embeddings))

    table = markdown_table(rows)
    (out_dir / "adherence.md").write_text(
        f"Prompt adherence of {cfg.checkpoint} on {len(targets)} captions of {test_manifest}, {cfg.duration:g} s "
        f"each. `real`: the held-out clips themselves (the estimators' ceiling; instrument = the classifier's "
        f"held-out accuracy); Fréchet distance to the real windows on the instrument classifier's embeddings.\n\n"
        + table)
    report = {
        "parameters": {**plain(cfg), "checkpoint": str(Path(cfg.checkpoint).resolve()),
                       "test_manifest": str(test_manifest), "train_manifest": str(train_manifest)},
        "instrument_labels": classifier.labels,
        "rows": rows,
        "clips": [asdict(measurement) for measurement in measurements],
    }
    (out_dir / "adherence.json").write_text(json.dumps(report, indent=2))
    print(table)
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
