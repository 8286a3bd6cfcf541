from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.build_default import DefaultDataConfig
from data.datasets import SegmentConfig, TokenWindowConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_data(name: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR / "data"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=name), resolve=True)


@pytest.mark.parametrize("name", ["default", "folder", "manifest"])
def test_every_data_config_builds_its_dataclasses(name):
    config = compose_data(name)
    segment = SegmentConfig(**config["segment"])
    tokens = TokenWindowConfig(**config["tokens"])
    assert tokens.caption.field_dropout["key"] == 0.3
    assert config["train_manifest"] == f"{config['root']}/train"
    if name == "default":
        build = DefaultDataConfig(**config["build"])
        assert build.out == config["root"] and build.sample_rate == segment.sample_rate == 24000
        assert [style.name for style in build.styles] == ["chorale", "folk"]
    else:
        assert config["build"] is None and segment.short_files == "skip"


def test_a_misspelled_key_fails_loudly():
    config = compose_data("default")
    with pytest.raises(TypeError, match="segment_secs"):
        SegmentConfig(**{**config["segment"], "segment_secs": 2.0})
