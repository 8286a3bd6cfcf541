"""Hydra structured configs: the dataclasses behind the config groups, registered as each group's `schema`.

Every root file of a group (configs/codec/base.yaml, configs/lm/default.yaml, configs/conditioner/*.yaml that start
no other file, configs/lora/default.yaml) lists `/<group>/schema@_here_` first in its defaults, and configs/config.yaml lists
`schema@generation: generation` before `generation: default`, so each group is checked against its dataclass: a
misspelled key, or a value of the wrong type, fails at compose time naming the key, before any model is built.
builders.py imports this module, and so does everything that composes through it (train.py, generate.py, the
notebooks); tests/conftest.py imports it for the tests that compose directly.
"""
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from codec.codec import CodecConfig
from codec.snac import SNACConfig
from conditioners.conditioner import ConditionerConfig
from lit.lm_module import LMTrainingConfig
from lm.generator import GenerationConfig
from lm.lm import LMConfig
from lm.lora import LoRAConfig
from lm.patterns import PatternConfig


@dataclass
class LMGroupConfig:
    """configs/lm/*.yaml: the model, its codebook pattern and its optimiser."""

    model: LMConfig = field(default_factory=LMConfig)
    pattern: PatternConfig = field(default_factory=PatternConfig)
    training: LMTrainingConfig = field(default_factory=LMTrainingConfig)


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="codec", name="schema", node=CodecConfig)
    store.store(group="codec", name="snac_schema", node=SNACConfig)  # configs/codec/snac_24khz.yaml
    store.store(group="lm", name="schema", node=LMGroupConfig)
    store.store(group="conditioner", name="schema", node=ConditionerConfig)
    store.store(group="lora", name="schema", node=LoRAConfig)
    # configs/config.yaml selects this before `generation: default` (generate.yaml and adherence.yaml merge the
    # generation keys into their root, where a schema of its own would type the whole root).
    store.store(group="schema", name="generation", node=GenerationConfig)


register()
