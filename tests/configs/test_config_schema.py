"""Structured configs (config_schema.py): a misspelled key or a mistyped value in a config group fails when the
config is composed, naming the key, instead of reaching a constructor (or being silently ignored)."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=["stage=lm", *overrides])


@pytest.mark.parametrize("group,body,key", [
    ("codec", "seanet:\n  n_filter: 8\n", "n_filter"),                        # n_filters misspelled
    ("lm", "model:\n  num_head: 8\n", "num_head"),                             # num_heads misspelled
    ("lm", "pattern:\n  delay: [0, 1, 2, 3]\n", "delay"),                      # delays misspelled
    ("conditioner", "text:\n  description:\n    max_len: 64\n", "max_len"),  # max_length misspelled
    ("generation", "cfg_coeff: 3.0\n", "cfg_coeff"),                          # cfg_coef misspelled
])
def test_a_misspelled_key_in_an_experiment_file_fails_at_compose_time_naming_it(tmp_path, group, body, key):
    """A user's experiment file (found through hydra.searchpath) with one misspelled key."""
    (tmp_path / "experiment").mkdir()
    indented = "".join(f"  {line}\n" for line in body.splitlines())
    (tmp_path / "experiment" / "typo.yaml").write_text(f"# @package _global_\n{group}:\n{indented}")
    with pytest.raises((ConfigCompositionException, ValidationError), match=key):
        compose_with(f"hydra.searchpath=[file://{tmp_path}]", "experiment=typo")


@pytest.mark.parametrize("override,key", [
    ("lm.model.dim=wide", "dim"),
    ("codec.quantizer.codebook_size=big", "codebook_size"),
    ("conditioner.cfg_dropout=often", "cfg_dropout"),
    ("generation.top_k=many", "top_k"),
])
def test_a_mistyped_value_fails_at_compose_time_naming_the_key(override, key):
    with pytest.raises((ConfigCompositionException, ValidationError), match=key):
        compose_with(override)


def test_every_preset_and_experiment_still_composes():
    for group in ("codec", "lm", "conditioner"):
        for preset in sorted(path.stem for path in (CONFIGS / group).glob("*.yaml")):
            cfg = compose_with(f"{group}={preset}")
            assert cfg[group] is not None, (group, preset)
    for experiment in sorted(path.stem for path in (CONFIGS / "experiment").glob("*.yaml")):
        assert compose_with(f"experiment={experiment}").lm.model.dim > 0, experiment
