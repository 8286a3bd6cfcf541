"""eval.adherence end to end on a tiny, untrained LM run and a synthetic dataset whose attributes are known."""
import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import save_file

from builders import build_codec, build_conditioner, build_lm
from data.audio import write_wav
from data.manifest import AudioEntry, write_manifest, write_sidecar
from eval.adherence import evaluate
from lit.lm_module import WEIGHTS_FILE
from tests.eval.synthetic_music import SAMPLE_RATE, cadence

REPO = Path(__file__).resolve().parents[2]
# (instrument = timbre, key, bpm) of the synthetic clips; the test split repeats the train split's attributes.
TRAIN = [("piano", "harmonic", "C major", 120), ("organ", "square", "A minor", 100),
         ("piano", "harmonic", "F# major", 90), ("organ", "square", "D minor", 130),
         ("piano", "harmonic", "Eb major", 110), ("organ", "square", "E minor", 80)]
TEST = [("piano", "harmonic", "G major", 105), ("organ", "square", "B minor", 125)]


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
    """An untrained demo-sized LM run (export/ only) with its codec, on a 6 + 2 clip synthetic dataset."""
    root = tmp_path_factory.mktemp("adherence")
    _write_split(root / "data" / "train", TRAIN)
    _write_split(root / "data" / "test", TEST)
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


def test_command_writes_the_table_and_json_with_a_row_per_setting(lm_run, tmp_path):
    out_dir = tmp_path / "report"
    assert _adherence(f"checkpoint={lm_run}", f"out_dir={out_dir}", "num_captions=5", "duration=3.0",
                      "batch_size=2", "instrument.steps=100") == out_dir
    report = json.loads((out_dir / "adherence.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["real", "cfg1", "cfg3", "uncond"]
    # The real clips are synthesized in their caption's key, at its tempo, with its timbre: the estimators see it.
    assert rows["real"]["clips"] == 4  # two 6 s test clips (num_captions=5 asks for more than there are), 3 s windows
    assert rows["real"]["key_exact"] == 1.0 and rows["real"]["tempo"] == 1.0 and rows["real"]["instrument"] == 1.0
    assert rows["real"]["frechet"] is None
    for name in ("cfg1", "cfg3", "uncond"):
        assert rows[name]["clips"] == 2 and rows[name]["frechet"] > 0
        assert all(0 <= rows[name][metric] <= 1 for metric in ("key_exact", "key_lenient", "tempo", "instrument"))
        assert sorted(path.name for path in (out_dir / "generated" / name).iterdir()) == ["000.wav", "001.wav"]
    assert report["instrument_labels"] == ["organ", "piano"]
    assert {clip["caption"] for clip in report["clips"]} == {"A piece played on piano in G major, 105 bpm.",
                                                             "A piece played on organ in B minor, 125 bpm."}
    table = (out_dir / "adherence.md").read_text()
    for name in rows:
        assert f"| {name} |" in table
    assert "| real | 4 | 1.00 | 1.00 | 1.00 | 1.00 | n/a |" in table
    assert (out_dir / "instrument_classifier.pt").is_file()


@pytest.mark.parametrize("override, message", [
    ("num_captions=0", "num_captions must be >= 1, got 0"),
    ("duration=2.5", "duration must be >= two beats at tempo.min_bpm=40.0: 3 s, got 2.5"),
    ("checkpoint=/does/not/exist", "is not an LM export"),
])
def test_bad_input_is_refused_before_anything_is_written(lm_run, tmp_path, override, message):
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        _adherence(f"checkpoint={lm_run}", f"out_dir={tmp_path / 'report'}", override)
    assert not (tmp_path / "report").exists()
