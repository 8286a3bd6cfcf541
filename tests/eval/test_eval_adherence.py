"""eval.adherence end to end on a tiny, untrained LM run and a synthetic dataset whose attributes are known."""
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import save_file

from builders import build_codec, build_conditioner, build_lm, plain
from data.audio import write_wav
from data.manifest import AudioEntry, write_manifest, write_sidecar
from codec.codec import Codec
from eval.adherence import (RATES, Target, clip_origins, evaluate, generate_rows, read_windows,
                            recombined_targets)
from eval.round_trip import codec_round_trip
from eval.instrument import InstrumentConfig, LogMelStatistics, train_classifier
from eval.key_tempo import TempoConfig, estimate_bpm
from eval.stats import Rate, intervals_overlap, samples_to_separate, wilson_interval
from lit.lm_module import WEIGHTS_FILE
from pipeline import GenerationPipeline
from tests.eval.synthetic_music import SAMPLE_RATE, cadence

REPO = Path(__file__).resolve().parents[2]
# (instrument = timbre, key, bpm) of the synthetic clips; the test split repeats the train split's attributes.
TRAIN = [("piano", "harmonic", "C major", 120), ("organ", "square", "A minor", 100),
         ("piano", "harmonic", "F# major", 90), ("organ", "square", "D minor", 130),
         ("piano", "harmonic", "Eb major", 110), ("organ", "square", "E minor", 80)]
TEST = [("piano", "harmonic", "G major", 105), ("organ", "square", "B minor", 125)]
VALID = [("organ", "square", "F major", 95)]


def _write_split(folder: Path, clips: list[tuple[str, str, str, int]]) -> None:
    from eval.key_tempo import parse_key

    entries = []
    for index, (instrument, timbre, key, bpm) in enumerate(clips):
        path = folder / f"clip_{index}.wav"
        write_wav(path, cadence(*parse_key(key), bpm=bpm, seconds=6.0, timbre=timbre)[None], SAMPLE_RATE)
        write_sidecar(path, {"description": f"A piece played on {instrument} in {key}, {bpm} bpm.", "key": key,
                             "bpm": bpm, "instrument": instrument})
        entries.append(AudioEntry(path=path.name, duration=6.0, sample_rate=SAMPLE_RATE, channels=1))
    write_manifest(folder / "data.jsonl", entries)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """An untrained demo-sized LM run (export/ only) with its codec, on a 6 + 2 + 1 clip synthetic dataset."""
    root = tmp_path_factory.mktemp("adherence")
    _write_split(root / "data" / "train", TRAIN)
    _write_split(root / "data" / "test", TEST)
    _write_split(root / "data" / "valid", VALID)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=demo", "stage=lm", f"data.root={root / 'data'}",
                                                       f"codec_dir={root / 'codec'}"])
    torch.manual_seed(0)
    build_codec(cfg).save(root / "codec")
    lm, conditioner = build_lm(cfg), build_conditioner(cfg)
    weights = {f"model.{name}": value for name, value in lm.state_dict().items()}
    weights |= {f"conditioner.provider.{name}": value for name, value in conditioner.state_dict().items()}
    (root / "lm" / "export").mkdir(parents=True)
    save_file({name: value.contiguous() for name, value in weights.items()}, root / "lm" / "export" / WEIGHTS_FILE)
    OmegaConf.save(cfg, root / "lm" / "export" / "train_config.yaml", resolve=True)
    return root / "lm"


def _adherence(*overrides: str) -> Path:
    """eval.adherence's main() minus its error printing: compose configs/adherence.yaml and run."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return evaluate(compose(config_name="adherence", overrides=list(overrides)))


def _cell(rate: dict) -> str:
    return f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}] n={rate['n']}"


def test_report_has_every_sample_with_its_seed_and_every_rate_with_n_and_interval(lm_run, tmp_path):
    out_dir = tmp_path / "report"
    assert _adherence(f"checkpoint={lm_run}", f"out_dir={out_dir}", "duration=3.0", "cfg_coefs=[3]",
                      "samples_per_caption=2", "recombined_captions=2", "batch_size=3",
                      "instrument.steps=100") == out_dir
    report = json.loads((out_dir / "adherence.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["real", "codec", "cfg3", "uncond"]

    # Captions: the 2 test clips, then the valid one (caption_splits order), then 2 recombined from their fields.
    captions = report["captions"]
    assert [caption["source"] for caption in captions] == ["test/clip_0.wav", "test/clip_1.wav", "valid/clip_0.wav",
                                                           "recombined", "recombined"]
    held_out = {(c["key"], c["instrument"], c["bpm"]) for c in captions[:3]}
    for caption in captions[3:]:
        fields = (caption["key"], caption["instrument"], caption["bpm"])
        assert fields not in held_out and caption["path"] is None
        assert {caption["key"]} <= {"G major", "B minor", "F major"} and caption["instrument"] in {"piano", "organ"}
        assert caption["bpm"] in {105.0, 125.0, 95.0}
        assert caption["caption"] == f"A piece played on {fields[1]} in {fields[0]} at {fields[2]:g} bpm."

    # 5 captions x 2 samples per row, sample-major, seeds item_seeds(0, 10): seed * 100003 + clip index.
    for name in ("cfg3", "uncond"):
        clips = [clip for clip in report["clips"] if clip["row"] == name]
        assert [(clip["caption_index"], clip["sample"], clip["seed"]) for clip in clips] == [
            (index % 5, index // 5, index) for index in range(10)]
        assert [clip["caption"] for clip in clips] == [captions[index % 5]["caption"] for index in range(10)]
        assert sorted(path.name for path in (out_dir / "generated" / name).iterdir()) == sorted(
            f"{caption:03d}_{sample:02d}.wav" for caption in range(5) for sample in range(2))
        assert rows[name]["clips"] == 10 and rows[name]["frechet"]["n"] == 10 and rows[name]["frechet"]["distance"] > 0
        for metric in RATES:  # every target names key, bpm and instrument: n = 10 for every rate
            rate = rows[name][metric]
            assert rate["n"] == 10 and (rate["low"], rate["high"]) == wilson_interval(round(rate["rate"] * 10), 10)
    # The real clips are synthesized in their caption's key, at its tempo, with its timbre: the estimators see it.
    real_clips = [clip for clip in report["clips"] if clip["row"] == "real"]
    assert [(clip["caption_index"], clip["sample"], clip["seed"]) for clip in real_clips] == [
        (0, 0, None), (0, 1, None), (1, 0, None), (1, 1, None), (2, 0, None), (2, 1, None)]  # two 3 s windows each
    perfect = {"rate": 1.0, "low": wilson_interval(6, 6)[0], "high": 1.0, "n": 6}
    assert rows["real"]["clips"] == 6 and rows["real"]["frechet"] is None
    assert all(rows["real"][metric] == perfect for metric in ("key_exact", "tempo", "instrument"))

    # The codec row: the same windows, each encoded and decoded by the LM's codec (a reference built here), measured.
    codec_clips = [clip for clip in report["clips"] if clip["row"] == "codec"]
    assert [(clip["caption_index"], clip["sample"]) for clip in codec_clips] == [
        (clip["caption_index"], clip["sample"]) for clip in real_clips]
    codec = Codec.load(lm_run.parent / "codec")
    windows = torch.cat([read_windows(str(lm_run.parent / "data" / "test" / f"clip_{index}.wav"), 3.0, SAMPLE_RATE)
                         for index in range(2)])  # [4, samples]
    with torch.no_grad():
        expected = codec.decode(codec.encode(windows[:, None]))[:, 0, :windows.shape[1]]  # both at 24 kHz
    round_trips = torch.stack([codec_round_trip(codec, window, SAMPLE_RATE) for window in windows])
    assert round_trips.shape == windows.shape and torch.allclose(round_trips, expected, atol=1e-6)
    assert rows["codec"]["clips"] == 6 and rows["codec"]["frechet"]["n"] == 6
    assert [clip["bpm"] for clip in codec_clips[:4]] == [
        round(estimate_bpm(clip, SAMPLE_RATE, TempoConfig(**report["parameters"]["tempo"])), 2)
        for clip in round_trips]

    table = (out_dir / "adherence.md").read_text()
    assert f"| real | 6 | {_cell(perfect)} | {_cell(perfect)} | {_cell(perfect)} | {_cell(perfect)} | n/a |" in table
    for name in ("cfg3", "uncond"):
        cells = " | ".join(_cell(rows[name][metric]) for metric in RATES)
        assert f"| {name} | 10 | {cells} | {rows[name]['frechet']['distance']:.2f} n=10 |" in table
    # The guided row against the unconditional one, per rate: overlap and the samples the same rates would need.
    assert "| metric | cfg3 vs uncond |" in table
    for metric in RATES:
        guided, unconditional = (Rate(**rows[name][metric]) for name in ("cfg3", "uncond"))
        needed = samples_to_separate(guided.rate, unconditional.rate)
        assert report["comparisons"]["cfg3"][metric] == {"overlap": intervals_overlap(guided, unconditional),
                                                         "samples_to_separate": needed}
    assert (out_dir / "instrument_classifier.pt").is_file()


def test_samples_are_batch_invariant_distinct_and_nested(lm_run):
    """Sample j of caption c is the same audio whatever the batch, differs from the caption's other samples,
    and keeps its seed when samples_per_caption grows."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="adherence", overrides=[f"checkpoint={lm_run}", "duration=0.5", "seed=5",
                                                          "cfg_coefs=[3]", "unconditional=false", "batch_size=1"])
    pipeline = GenerationPipeline.load(lm_run)
    origins = clip_origins(num_captions=3, samples_per_caption=2, seed=5)
    assert [origin.seed for origin in origins] == [5 * 100_003 + index for index in range(6)]
    assert clip_origins(num_captions=3, samples_per_caption=4, seed=5)[:6] == origins
    captions = [["calm piano in C major", "fast organ", "a slow waltz"][origin.caption_index] for origin in origins]
    alone = generate_rows(cfg, captions, pipeline)["cfg3"]  # [6, samples], one clip per batch
    cfg.batch_size = 4
    together = generate_rows(cfg, captions, pipeline)["cfg3"]  # batches of 4 and 2
    # Same tokens; the decoded audio differs by float rounding of batched convs (1.6e-6 of a peak of 1.9 measured).
    assert torch.allclose(alone, together, atol=1e-5)
    for caption in range(3):  # samples 0 and 1 of a caption: clips c and c + 3
        assert not torch.allclose(alone[caption], alone[caption + 3], atol=1e-3)


def test_recombined_captions_are_new_combinations_fixed_by_the_seed():
    held_out = [Target("test/a.wav", "a.wav", "a", "C major", 100.0, "piano"),
                Target("test/b.wav", "b.wav", "b", "A minor", 80.0, "organ"),
                Target("test/c.wav", "c.wav", "c", "A minor", 80.0, "theremin")]  # the classifier knows no theremin
    drawn = recombined_targets(held_out, 6, {"piano", "organ"}, seed=0)
    combinations = [(target.key, target.instrument, target.bpm) for target in drawn]
    assert sorted(combinations) == sorted(
        (key, instrument, bpm) for key in ("A minor", "C major") for instrument in ("organ", "piano")
        for bpm in (80.0, 100.0)
        if (key, instrument, bpm) not in {("C major", "piano", 100.0), ("A minor", "organ", 80.0)})
    assert recombined_targets(held_out, 6, {"piano", "organ"}, seed=0) == drawn
    reordered = recombined_targets(held_out, 6, {"piano", "organ"}, seed=1)
    assert [target.caption for target in reordered] != [target.caption for target in drawn]
    with pytest.raises(ValueError, match="recombined_captions must be <= 6, .* got 7"):
        recombined_targets(held_out, 7, {"piano", "organ"}, seed=0)


def test_classifier_learns_from_codec_round_trips_when_asked(lm_run, tmp_path):
    """classifier_audio=codec: the classifier is the one trained on the training windows after a codec round trip
    (a reference trained here), not the one trained on the windows themselves."""
    config = InstrumentConfig(**plain(OmegaConf.load(REPO / "configs" / "adherence.yaml").instrument))
    config = replace(config, steps=50)
    features = LogMelStatistics(config, SAMPLE_RATE)
    codec = Codec.load(lm_run.parent / "codec")
    rows, labels = {"real": [], "codec": []}, []
    for index, (instrument, *_) in enumerate(TRAIN):
        windows = read_windows(str(lm_run.parent / "data" / "train" / f"clip_{index}.wav"), 3.0, SAMPLE_RATE)
        rows["real"].append(features(windows))
        rows["codec"].append(features(torch.stack([codec_round_trip(codec, window, SAMPLE_RATE)
                                                    for window in windows])))
        labels += [instrument] * len(windows)
    references = {audio: train_classifier(torch.cat(rows[audio]), labels, config) for audio in rows}
    for audio in ("real", "codec"):
        out_dir = tmp_path / audio
        _adherence(f"checkpoint={lm_run}", f"out_dir={out_dir}", "duration=3.0", "cfg_coefs=[3]",
                   "unconditional=false", "samples_per_caption=1", "recombined_captions=0", "instrument.steps=50",
                   f"classifier_audio={audio}")
        saved = torch.load(out_dir / "instrument_classifier.pt", weights_only=True)["state"]
        for name, value in references[audio].state_dict().items():
            assert torch.allclose(saved[name], value, atol=1e-6), (audio, name)
    real, codec_trained = (torch.load(tmp_path / audio / "instrument_classifier.pt", weights_only=True)["state"]
                           for audio in ("real", "codec"))
    assert not torch.allclose(real["hidden.weight"], codec_trained["hidden.weight"], atol=1e-3)


def test_a_codec_retrained_into_the_same_directory_retrains_the_codec_classifier(lm_run, tmp_path):
    """classifier_audio=codec caches the classifier under the codec's weights, not only its directory: new weights
    saved where the old ones were must not reuse the old round trips' classifier."""
    codec_dir, out_dir = tmp_path / "codec", tmp_path / "report"
    codec = Codec.load(lm_run.parent / "codec")
    codec.save(codec_dir)
    run = [f"checkpoint={lm_run}", f"codec_dir={codec_dir}", f"out_dir={out_dir}", "duration=3.0", "cfg_coefs=[3]",
           "unconditional=false", "samples_per_caption=1", "recombined_captions=0", "instrument.steps=50",
           "classifier_audio=codec"]
    _adherence(*run)
    before = torch.load(out_dir / "instrument_classifier.pt", weights_only=True)
    with torch.no_grad():
        for parameter in codec.decoder.parameters():
            parameter.mul_(0.5)
    codec.save(codec_dir)
    _adherence(*run)
    after = torch.load(out_dir / "instrument_classifier.pt", weights_only=True)
    assert before["fingerprint"] != after["fingerprint"]
    assert not torch.allclose(before["state"]["hidden.weight"], after["state"]["hidden.weight"], atol=1e-4)


@pytest.mark.parametrize("override, message", [
    ("num_captions=0", "num_captions must be an integer >= 1 (or null: every held-out clip), got 0"),
    ("samples_per_caption=1.5", "samples_per_caption must be an integer >= 1, got 1.5"),
    ("samples_per_caption=0", "samples_per_caption must be an integer >= 1, got 0"),
    ("recombined_captions=-1", "recombined_captions must be an integer >= 0, got -1"),
    ("recombined_captions=100", "recombined_captions must be <= 15, the key x instrument x bpm combinations"),
    ("caption_splits=[train]", "caption_splits must list one or both of ['test', 'valid'], got ['train']"),
    ("confidence=1.5", "confidence must be in (0, 1), got 1.5"),
    ("valid_manifest=/does/not/exist", "valid_manifest: manifest /does/not/exist does not exist"),
    ("duration=2.5", "duration must be >= two beats at tempo.min_bpm=40.0: 3 s, got 2.5"),
    ("checkpoint=/does/not/exist", "is not an LM export"),
    ("classifier_audio=mp3", "classifier_audio must be one of ['real', 'codec'], got 'mp3'"),
])
def test_bad_input_is_refused_before_anything_is_written(lm_run, tmp_path, override, message):
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        _adherence(f"checkpoint={lm_run}", f"out_dir={tmp_path / 'report'}", override)
    assert not (tmp_path / "report").exists()
