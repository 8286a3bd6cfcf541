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
from omegaconf import DictConfig, OmegaConf

from codec.codec import CodecConfig
from codec.snac import SNACConfig
from conditioners.conditioner import ConditionerConfig
from data.tts_dataset import TTSSequenceConfig
from lit.callbacks import TTSSamplesConfig
from lit.lm_module import LMTrainingConfig
from lm.generator import GenerationConfig
from lm.lm import LMConfig
from lm.lora import LoRAConfig
from lm.multirate import MultiRatePattern
from lm.patterns import PatternConfig
from lm.tts_format import TTSFormatConfig
from lm.tts_generator import TTSGenerationConfig
from lm.tts_lm import TTSLMConfig


@dataclass
class LMGroupConfig:
    """configs/lm/*.yaml: the model, its codebook pattern and its optimiser."""

    model: LMConfig = field(default_factory=LMConfig)
    pattern: PatternConfig = field(default_factory=PatternConfig)
    training: LMTrainingConfig = field(default_factory=LMTrainingConfig)


@dataclass
class TTSGroupConfig:
    """configs/tts/*.yaml: the TTS LM, its sequence format, its training sequences, optimiser, sampling and
    validation samples."""

    model: TTSLMConfig = field(default_factory=TTSLMConfig)
    format: TTSFormatConfig = field(default_factory=TTSFormatConfig)
    sequences: TTSSequenceConfig = field(default_factory=TTSSequenceConfig)
    training: LMTrainingConfig = field(default_factory=LMTrainingConfig)
    generation: TTSGenerationConfig = field(default_factory=TTSGenerationConfig)
    samples: TTSSamplesConfig = field(default_factory=TTSSamplesConfig)  # validation samples (lit/callbacks.py)
    hf_base: str | None = None  # a local Hugging Face causal LM directory to start from (lm/hf_tts_lm.py)


def lm_codebooks(codec: DictConfig) -> int:
    """`${lm_codebooks:${codec}}` in configs/config.yaml: the token streams an LM predicts for a codec config, the
    RVQ's num_codebooks, or for a multi-scale codec (quantizer.strides, SNAC) the F slots of one coarse frame
    (lm/multirate.py `to_frames`, the layout data.extract_tokens writes): 7 for strides [4, 2, 1]."""
    if "strides" in codec.quantizer:
        return MultiRatePattern(list(codec.quantizer.strides)).frame_size
    return codec.quantizer.num_codebooks


def register() -> None:
    OmegaConf.register_new_resolver("lm_codebooks", lm_codebooks, replace=True)
    store = ConfigStore.instance()
    store.store(group="codec", name="schema", node=CodecConfig)
    store.store(group="codec", name="snac_schema", node=SNACConfig)  # configs/codec/snac_24khz.yaml
    store.store(group="lm", name="schema", node=LMGroupConfig)
    store.store(group="conditioner", name="schema", node=ConditionerConfig)
    store.store(group="lora", name="schema", node=LoRAConfig)
    store.store(group="tts", name="schema", node=TTSGroupConfig)
    # configs/config.yaml selects this before `generation: default` (generate.yaml and adherence.yaml merge the
    # generation keys into their root, where a schema of its own would type the whole root).
    store.store(group="schema", name="generation", node=GenerationConfig)


register()
