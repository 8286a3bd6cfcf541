"""Every experiment file composes, and the sizes the parts must agree on follow one source."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from builders import build_codec, build_conditioner, build_lm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = sorted(path.stem for path in (CONFIGS / "experiment").glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


STAGES = {"tts_demo": ["codec", "tts"]}  # the speech demo trains a TTS LM, not the MusicGen-style one


@pytest.mark.parametrize("experiment, stage", [(experiment, stage) for experiment in EXPERIMENTS
                                               for stage in STAGES.get(experiment, ["codec", "lm"])])
def test_experiment_composes_and_resolves(experiment, stage):
    cfg = composed(f"experiment={experiment}", f"stage={stage}")
    assert cfg.stage == stage
    quantizer = cfg.codec.quantizer  # an RVQ's codebooks, or a multi-scale codec's slots per coarse frame
    streams = quantizer.get("num_codebooks") or sum(quantizer.strides[0] // stride for stride in quantizer.strides)
    assert cfg.lm.model.num_codebooks == streams
    assert cfg.lm.model.card == cfg.codec.quantizer.codebook_size
    assert cfg.conditioner.output_dim == cfg.lm.model.dim


def test_demo_models_build_and_fit_together():
    cfg = composed("experiment=demo")
    codec, lm, conditioner = build_codec(cfg), build_lm(cfg), build_conditioner(cfg)
    assert lm.config.num_codebooks == codec.num_codebooks and lm.config.card == codec.cardinality
    assert conditioner.text["description"].projection.out_features == lm.config.dim
