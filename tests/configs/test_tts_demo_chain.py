"""`make demo-tts`: the commands the Makefile runs compose, and each stage reads what the one before it wrote.

The commands come from `make -n -B` (printed, never run), so the test follows the Makefile as it is."""
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from data.build_speech import load_build_config

REPO = Path(__file__).resolve().parents[2]
DEMO = "outputs/tts_demo"
TARGET = f"{DEMO}/eval/speech.md"


@pytest.fixture(scope="module")
def commands() -> list[list[str]]:
    """Every command of the demo-tts chain, split into words (continuation lines joined)."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    printed = subprocess.run(["make", "-n", "-B", TARGET], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in printed.replace("\\\n", " ").splitlines() if line.startswith(".venv/bin/python")]


def command(commands: list[list[str]], *words: str) -> list[str]:
    """The one command holding all `words`, minus the interpreter."""
    [found] = [line[1:] for line in commands if all(word in line for word in words)]
    return found


def options(words: list[str]) -> dict[str, str]:
    """key=value words -> {key: value}."""
    return dict(word.split("=", 1) for word in words if "=" in word and not word.startswith("-"))


def composed(overrides: list[str]):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("stage", ["codec", "tts"])
def test_each_training_stage_composes_and_writes_where_the_next_reads(commands, stage):
    overrides = command(commands, "train.py", f"stage={stage}")[1:]
    assert "experiment=tts_demo" in overrides
    cfg = composed(overrides)
    assert cfg.hydra.run.dir == f"{DEMO}/{stage}"  # its export/ is the Makefile's file target
    assert cfg.trainer.max_steps == cfg.steps_per_stage[stage]
    built = command(commands, "data.build_speech")
    assert built[built.index("--out") + 1] == cfg.data.root == f"{DEMO}/data"
    extraction = command(commands, "data.extract_tokens", "--manifest", f"{DEMO}/data/train")
    assert extraction[extraction.index("--codec") + 1] == cfg.codec_dir == f"{DEMO}/codec/export"
    assert extraction[extraction.index("--out") + 1] == f"{cfg.data.tokens_root}/train"
    assert cfg.tts.format.card == cfg.codec.quantizer.codebook_size
    assert list(cfg.tts.format.strides) == list(cfg.codec.quantizer.strides)


def test_generation_and_scoring_read_the_runs_and_the_data(commands):
    generation = options(command(commands, "generate.py"))
    assert generation["checkpoint"] == f"{DEMO}/tts" and generation["prompts_manifest"] == f"{DEMO}/data/test"
    assert int(generation["max_prompts"]) == 4
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        voices = list(compose("generate", overrides=[f"speakers={generation['speakers']}"]).speakers)
    built = command(commands, "data.build_speech")
    assert sorted(voices) == sorted(built[built.index("--speakers") + 1:])  # each training voice speaks once
    ceiling = options(command(commands, "eval.speech", f"out_dir={DEMO}/ceiling"))
    scoring = options(command(commands, "eval.speech", f"generated={generation['out_dir']}"))
    assert scoring["codec_dir"] == f"{DEMO}/codec/export"
    for key in ("train_manifest", "test_manifest", "cache_dir"):  # the ceiling run trains what scoring reuses
        assert scoring[key] == ceiling[key]
    assert scoring["train_manifest"] == f"{DEMO}/data/train"


def test_the_speech_build_flags_make_a_valid_build_with_several_voices(commands):
    words = command(commands, "data.build_speech")[2:]
    flags, name = {}, None
    for word in words:
        if word.startswith("--"):
            name = word[2:].replace("-", "_")
            flags[name] = []
        else:
            flags[name].append(word)
    config = load_build_config(out=flags.pop("out")[0], minutes=float(flags.pop("minutes")[0]),
                               min_words=int(flags.pop("min_words")[0]), max_words=int(flags.pop("max_words")[0]),
                               word_list_prob=float(flags.pop("word_list_prob")[0]),
                               rate_range=[int(value) for value in flags.pop("rate_range")],
                               speakers=flags.pop("speakers"))
    assert flags == {}  # every flag the Makefile passes is checked above
    assert len({re.sub(r"\+.*", "", speaker) for speaker in config.speakers}) >= 2  # accents to control
    assert {config.variants[speaker.split("+")[1]] for speaker in config.speakers} == {"man", "woman"}
