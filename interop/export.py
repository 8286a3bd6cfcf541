"""The LM export a converted checkpoint becomes, and the pieces of it every converter writes.

    DIR/train_config.yaml   the full config (configs/config.yaml composed, then the converted sizes and switches)
    DIR/lm.safetensors      `model.*` (LMModel) and `conditioner.provider.*` (the text, and melody, projections)
    DIR/codec/              the codec (Codec.save layout)
    DIR/text_encoder/       the frozen T5 encoder (HF T5EncoderModel layout) and its tokenizer

`codec_dir` and the text encoder path are stored relative to DIR (builders.load_lm_export resolves them there),
so the folder can be moved or copied whole.
"""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import Tensor

from codec.codec import CodecConfig
from conditioners.chroma import NUM_PITCH_CLASSES
from interop.encodec import write_codec
from interop.state import ConversionError, check_state
from lit.lm_module import WEIGHTS_FILE
from lm.lm import LMConfig, LMModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILE = "train_config.yaml"
CODEC_DIR = "codec"
TEXT_ENCODER_DIR = "text_encoder"
TEXT_PROJECTION = "conditioner.provider.text.description.projection."
MELODY_PROJECTION = "conditioner.provider.chroma.melody.projection."
# The files of a T5 tokenizer; `tokenizer.json` (fast) or `spiece.model` (SentencePiece) must be among them.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


@dataclass
class LMExport:
    """What a converter knows about the model it writes; `write` turns it into an export directory."""

    lm: LMConfig
    codec: CodecConfig
    text_hidden_size: int  # the T5 encoder's width E: the text projection is [D, E]
    text_max_length: int | None  # tokens kept per text; None = no truncation (both references)
    converted_from: str  # "<format> <source path>", recorded in train_config.yaml
    # MusicGen-Melody: the checkpoint's chroma keys (sample_rate, frame_rate, n_fft, length, max_duration) over
    # configs/conditioner/musicgen_melody.yaml. None: MusicGen, the text through cross-attention (t5_base.yaml)
    melody: dict | None = None

    def config(self) -> DictConfig:
        preset = "t5_base" if self.melody is None else "musicgen_melody"
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["stage=lm", f"conditioner={preset}"])
        if self.melody is not None:
            cfg.conditioner.chroma.melody.merge_with(self.melody)  # still in struct mode: an unknown key fails here
        cfg.lm.model = self.lm  # typed nodes (config_schema.py): the dataclasses themselves
        cfg.codec = self.codec
        OmegaConf.set_struct(cfg, False)
        cfg.codec_dir = CODEC_DIR
        cfg.conditioner.output_dim = self.lm.dim
        cfg.conditioner.text.description.encoder = TEXT_ENCODER_DIR
        cfg.conditioner.text.description.max_length = self.text_max_length
        cfg.converted_from = self.converted_from
        return cfg

    def write(self, directory: Path, lm_state: dict[str, Tensor], codec_state: dict[str, Tensor]) -> None:
        """Check the weights against the configs, then write train_config.yaml, lm.safetensors and codec/."""
        with torch.device("meta"):
            model = LMModel(self.lm)
        model_state = {name[len("model."):]: value for name, value in lm_state.items() if name.startswith("model.")}
        check_state(model_state, model, self.converted_from)
        projections = {TEXT_PROJECTION + "weight": (self.lm.dim, self.text_hidden_size),
                       TEXT_PROJECTION + "bias": (self.lm.dim,)}
        if self.melody is not None:
            projections |= {MELODY_PROJECTION + "weight": (self.lm.dim, NUM_PITCH_CLASSES),
                            MELODY_PROJECTION + "bias": (self.lm.dim,)}
        for name, shape in projections.items():
            tensor = lm_state.get(name)
            if tensor is None or tuple(tensor.shape) != shape:
                raise ConversionError(f"{self.converted_from}: {name} must be {shape}, "
                                      f"got {None if tensor is None else tuple(tensor.shape)}")
        extra = set(lm_state) - {f"model.{name}" for name in model_state} - set(projections)
        if extra:
            raise ConversionError(f"{self.converted_from}: unexpected LM export keys {sorted(extra)[:10]}")
        directory.mkdir(parents=True, exist_ok=True)
        save_file({name: tensor.contiguous() for name, tensor in lm_state.items()}, directory / WEIGHTS_FILE)
        write_codec(self.codec, codec_state, directory / CODEC_DIR)
        OmegaConf.save(self.config(), directory / CONFIG_FILE, resolve=True)


def write_text_encoder(config: dict, weights: Mapping[str, Tensor], tokenizer_dir: Path, directory: Path) -> None:
    """A T5 encoder's config and weights (HF T5EncoderModel names) and the tokenizer files of `tokenizer_dir`."""
    if config.get("model_type") != "t5":
        raise ConversionError(f"{tokenizer_dir}: the text encoder must be T5, got model_type "
                              f"{config.get('model_type')!r}")
    foreign = [name for name in weights if not name.startswith(("shared.", "encoder."))]
    if foreign:
        raise ConversionError(f"{tokenizer_dir}: text encoder keys outside a T5 encoder: {foreign[:10]}")
    tokenizer_files = [tokenizer_dir / name for name in TOKENIZER_FILES if (tokenizer_dir / name).is_file()]
    if not any(path.name in ("tokenizer.json", "spiece.model") for path in tokenizer_files):
        raise ConversionError(f"{tokenizer_dir}: no tokenizer (expected tokenizer.json or spiece.model beside the "
                              f"weights, as `processor.save_pretrained` writes them)")
    directory.mkdir(parents=True)
    encoder_config = {**config, "architectures": ["T5EncoderModel"]}
    (directory / "config.json").write_text(json.dumps(encoder_config, indent=2))
    save_file({name: weights[name].contiguous() for name in weights}, directory / "model.safetensors")
    for path in tokenizer_files:
        shutil.copyfile(path, directory / path.name)
