"""Config -> objects: the one place where the composed Hydra config becomes models, datasets and settings.

train.py, generate.py and the notebooks build everything through these functions, so a key means the same
thing wherever it is read.
"""
from dataclasses import fields
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

import config_schema  # noqa: F401  registers the config groups' schemas before anything composes
from codec.backends.config import CodecBackendConfig
from codec.codec import Codec
from codec.loading import build_codec as codec_from_config
from codec.snac import SNACCodec
from conditioners.conditioner import ConditionerConfig, ConditionProvider
from data.datasets import SegmentConfig, SegmentDataset, TokenWindowConfig, TokenWindowDataset
from data.manifest import read_manifest
from data.token_shards import read_info
from data.tts_dataset import TTSDataset, TTSSequenceConfig, training_speakers
from lit.callbacks import TTSSamplesConfig
from lit.codec_module import CodecLossConfig
from lit.lm_module import WEIGHTS_FILE, LMTrainingConfig
from lit.tts_module import WEIGHTS_FILE as TTS_WEIGHTS_FILE
from lm.backends.config import DecodeBackendConfig
from lm.generator import GenerationConfig
from lm.hf_tts_lm import HFTTSLM
from lm.lm import LMConfig, LMModel
from lm.lora import LoRAConfig, apply_lora
from lm.patterns import PatternConfig, PatternProvider, make_pattern
from lm.tts_format import TTSFormat, TTSFormatConfig
from lm.tts_generator import TTSGenerationConfig
from lm.tts_lm import TTSLM, TTSLMConfig


def plain(node: DictConfig) -> dict:
    """A config node as plain, resolved Python containers (what the dataclasses take)."""
    return OmegaConf.to_container(node, resolve=True)


def build_codec(cfg: DictConfig) -> Codec | SNACCodec:
    """`codec:` -> a Codec (configs/codec/base.yaml and its presets) or, for a SNAC preset (configs/codec/snac_*.yaml),
    a SNACCodec."""
    return codec_from_config(plain(cfg.codec))


def build_codec_loss(cfg: DictConfig) -> CodecLossConfig:
    return CodecLossConfig(**plain(cfg.codec_loss))


def build_lm(cfg: DictConfig) -> LMModel:
    return LMModel(LMConfig(**plain(cfg.lm.model)))


def build_pattern(cfg: DictConfig) -> PatternProvider:
    return make_pattern(PatternConfig(**plain(cfg.lm.pattern)), num_codebooks=cfg.lm.model.num_codebooks)


def build_lm_training(cfg: DictConfig) -> LMTrainingConfig:
    return LMTrainingConfig(**plain(cfg.lm.training))


def build_conditioner(cfg: DictConfig) -> ConditionProvider:
    return ConditionProvider(ConditionerConfig(**plain(cfg.conditioner)))


def lm_export_directory(path: str | Path) -> Path:
    """An LM run directory or its export/ -> the export directory (train_config.yaml + lm.safetensors)."""
    directory = Path(path)
    if (directory / "export").is_dir():
        directory = directory / "export"
    if not ((directory / "train_config.yaml").is_file() and (directory / WEIGHTS_FILE).is_file()):
        raise FileNotFoundError(f"checkpoint {path} is not an LM export: train_config.yaml and {WEIGHTS_FILE} are "
                                f"written to <run dir>/export by `train.py stage=lm` and by `interop.convert`")
    return directory


def load_lm_export(path: str | Path, device: torch.device | str = "cpu"
                   ) -> tuple[LMModel, PatternProvider, ConditionProvider, DictConfig]:
    """An LM run directory (or its export/) -> (LM, pattern, conditioner, the run's resolved config), in eval mode."""
    directory = lm_export_directory(path)
    cfg, weights_file = OmegaConf.load(directory / "train_config.yaml"), directory / WEIGHTS_FILE
    resolve_bundled_paths(cfg, directory)
    lm, pattern, conditioner = build_lm(cfg), build_pattern(cfg), build_conditioner(cfg)
    weights = load_file(weights_file, device="cpu")
    for prefix, module in (("model.", lm), ("conditioner.provider.", conditioner)):
        module.load_state_dict({name[len(prefix):]: value for name, value in weights.items() if name.startswith(prefix)})
    return lm.to(device).eval(), pattern, conditioner.to(device).eval(), cfg


def init_from_export(module: torch.nn.Module, cfg: DictConfig) -> None:
    """Start an LM run from an export's weights (`init_from=DIR`: a training run, or what interop.convert wrote).

    The run's config must describe the same model: every `lm.model` key and the pattern are compared, and a
    difference is refused naming the key and both values, before any weight is copied. activation_checkpointing
    is not compared: it changes how training keeps activations, not the model.
    """
    try:
        directory = lm_export_directory(cfg.init_from)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"init_from={cfg.init_from}: {error}") from None
    source, weights_file = OmegaConf.load(directory / "train_config.yaml"), directory / WEIGHTS_FILE
    ours, theirs = LMConfig(**plain(cfg.lm.model)), LMConfig(**plain(source.lm.model))
    differences = [f"lm.model.{field.name}={getattr(ours, field.name)!r} (checkpoint: {getattr(theirs, field.name)!r})"
                   for field in fields(LMConfig) if field.name != "activation_checkpointing"
                   and getattr(ours, field.name) != getattr(theirs, field.name)]
    for key in ("kind", "delays", "flattening", "group_by"):
        if cfg.lm.pattern.get(key) != source.lm.pattern.get(key):
            differences.append(f"lm.pattern.{key}={cfg.lm.pattern.get(key)!r} (checkpoint: "
                               f"{source.lm.pattern.get(key)!r})")
    if differences:
        raise ValueError(f"init_from={cfg.init_from} holds a different model: {'; '.join(differences)}")
    weights = load_file(weights_file, device="cpu")
    expected = module.state_dict()
    wrong = sorted(set(weights) ^ set(expected)) + [
        f"{name} {tuple(weights[name].shape)} (config: {tuple(expected[name].shape)})"
        for name in set(weights) & set(expected) if weights[name].shape != expected[name].shape]
    if wrong:
        raise ValueError(f"init_from={cfg.init_from}: its weights do not fit this run's conditioner or LM: "
                         f"{wrong[:10]}")
    module.load_state_dict(weights)


def build_lora(cfg: DictConfig) -> LoRAConfig | None:
    """`lora:` (configs/lora/) -> its LoRAConfig, or None for a run without adapters. Adapters fine-tune a trained
    LM, so `lora` needs `stage=lm` and `init_from`; a missing one, or a bad lora key, is refused here, before any
    model is built."""
    if cfg.lora is None:
        return None
    if cfg.stage != "lm" or cfg.init_from is None:
        raise ValueError(f"lora is set but stage={cfg.stage} init_from={cfg.init_from}: LoRA adapters fine-tune a "
                         f"trained LM: give stage=lm and init_from=DIR (an LM export)")
    try:
        return LoRAConfig(**plain(cfg.lora))
    except TypeError as error:  # an unknown key
        raise ValueError(f"lora: {error} (keys: rank, alpha, dropout, targets)") from None


def add_lora(module: torch.nn.Module, config: LoRAConfig) -> None:
    """Freeze the whole LM module (the LM and the conditioner's projections) and put LoRA adapters on its LM
    (`module.model`): the adapters are then its only trainable parameters."""
    module.requires_grad_(False)
    apply_lora(module.model, config)


def resolve_bundled_paths(cfg: DictConfig, directory: Path) -> None:
    """Make the paths an export keeps inside itself absolute: a converted checkpoint stores its codec and text
    encoder as `codec_dir: codec` and `encoder: text_encoder`, relative to the export (interop/export.py)."""
    def inside(path: str | None) -> str | None:
        if path is None or Path(path).is_absolute() or not (directory / path).is_dir():
            return path
        return str((directory / path).resolve())

    cfg.codec_dir = inside(cfg.get("codec_dir"))
    for text in cfg.conditioner.get("text", {}).values():
        text.encoder = inside(text.encoder)


def build_generation(node: DictConfig) -> GenerationConfig:
    """From the node holding the sampling keys: cfg.generation in train.py, the root in generate.py."""
    return GenerationConfig(**{field.name: node[field.name] for field in fields(GenerationConfig)})


def build_decode_backend(node: DictConfig) -> DecodeBackendConfig:
    """From the node holding the backend keys: the root in generate.py and eval.adherence."""
    return DecodeBackendConfig(**{field.name: node[field.name] for field in fields(DecodeBackendConfig)})


def build_codec_backend(node: DictConfig) -> CodecBackendConfig:
    """From the node holding `codec_backend` (configs/codec_backend/): the root in generate.py and eval.adherence."""
    return CodecBackendConfig(**plain(node.codec_backend))


def build_segment_datasets(cfg: DictConfig) -> tuple[SegmentDataset, SegmentDataset]:
    """Codec stage: random segments of the train and valid manifests."""
    segment = SegmentConfig(**plain(cfg.data.segment))
    return tuple(SegmentDataset(read_manifest(cfg.data[f"{split}_manifest"]), segment) for split in ("train", "valid"))


def build_token_datasets(cfg: DictConfig) -> tuple[TokenWindowDataset, TokenWindowDataset]:
    """LM stage: windows of the codes data.extract_tokens wrote; refuses tokens of a codec the LM does not fit."""
    config = TokenWindowConfig(**plain(cfg.data.tokens))
    datasets = []
    for split in ("train", "valid"):
        folder = Path(cfg.data.tokens_root) / split
        info = read_info(folder)
        model = cfg.lm.model
        if (info["num_codebooks"], info["cardinality"]) != (model.num_codebooks, model.card):
            raise ValueError(
                f"tokens in {folder} have {info['num_codebooks']} codebooks x {info['cardinality']}, but the LM "
                f"expects lm.model.num_codebooks={model.num_codebooks} x lm.model.card={model.card}"
            )
        datasets.append(TokenWindowDataset(str(folder), config))
    return tuple(datasets)


def build_tts_format(cfg: DictConfig) -> TTSFormat:
    return TTSFormat(TTSFormatConfig(**plain(cfg.tts.format)))


def build_tts(cfg: DictConfig, tts_format: TTSFormat) -> TTSLM | HFTTSLM:
    """`tts.model`'s TTSLM, or with `tts.hf_base` that Hugging Face LM with the format's vocabulary appended."""
    if cfg.tts.get("hf_base") is not None:
        return HFTTSLM.from_pretrained(cfg.tts.hf_base, vocab_size=tts_format.vocab_size)
    return TTSLM(TTSLMConfig(**plain(cfg.tts.model)), vocab_size=tts_format.vocab_size)


def build_tts_training(cfg: DictConfig) -> LMTrainingConfig:
    return LMTrainingConfig(**plain(cfg.tts.training))


def build_tts_generation(cfg: DictConfig) -> TTSGenerationConfig:
    return TTSGenerationConfig(**plain(cfg.tts.generation))


def build_tts_samples(cfg: DictConfig) -> TTSSamplesConfig:
    return TTSSamplesConfig(**plain(cfg.tts.samples))


def build_tts_datasets(cfg: DictConfig, tts_format: TTSFormat) -> tuple[TTSDataset, TTSDataset]:
    """TTS stage: whole utterances of the multi-rate tokens data.extract_tokens wrote, with their transcripts;
    tokens of another codec layout than tts.format are refused."""
    sequences = TTSSequenceConfig(**plain(cfg.tts.sequences))
    return tuple(TTSDataset(str(Path(cfg.data.tokens_root) / split), tts_format, sequences, shuffle=split == "train")
                 for split in ("train", "valid"))


def fill_tts_speakers(cfg: DictConfig) -> None:
    """stage=tts: `tts.format.speakers` <- the training split's voices (sorted, distinct sidecar
    `tts.sequences.speaker_field` values; none with that field null), so the export's resolved config rebuilds the
    same vocabulary."""
    if cfg.tts.format.speakers:
        raise ValueError(f"tts.format.speakers={list(cfg.tts.format.speakers)} is filled from the training split at "
                         f"stage=tts: leave it empty (tts.sequences.speaker_field=null trains without speakers)")
    cfg.tts.format.speakers = training_speakers(str(Path(cfg.data.tokens_root) / "train"),
                                                cfg.tts.sequences.speaker_field)


def is_tts_export(path: str | Path) -> bool:
    """Whether a run directory (or its export/) holds a TTS export: its weights file is tts.safetensors
    (`train.py stage=tts`), where an LM export's is lm.safetensors."""
    directory = Path(path)
    return (directory / TTS_WEIGHTS_FILE).is_file() or (directory / "export" / TTS_WEIGHTS_FILE).is_file()


def tts_export_directory(path: str | Path) -> Path:
    """A TTS run directory or its export/ -> the export directory (train_config.yaml + tts.safetensors)."""
    directory = Path(path)
    if (directory / "export").is_dir():
        directory = directory / "export"
    if not ((directory / "train_config.yaml").is_file() and (directory / TTS_WEIGHTS_FILE).is_file()):
        raise FileNotFoundError(f"checkpoint {path} is not a TTS export: train_config.yaml and {TTS_WEIGHTS_FILE} "
                                f"are written to <run dir>/export by `train.py stage=tts`")
    return directory


def load_tts_export(path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[TTSLM | HFTTSLM, TTSFormat, DictConfig]:
    """A TTS run directory (or its export/) -> (model in eval mode, its format, the run's resolved config)."""
    directory = tts_export_directory(path)
    cfg = OmegaConf.load(directory / "train_config.yaml")
    tts_format = build_tts_format(cfg)
    if cfg.tts.get("hf_base") is not None:  # the architecture is in the export: the base directory is not needed
        model = HFTTSLM.from_export(directory, vocab_size=tts_format.vocab_size)
    else:
        model = build_tts(cfg, tts_format)
    model.load_state_dict(load_file(directory / TTS_WEIGHTS_FILE, device="cpu"))
    return model.to(device).eval(), tts_format, cfg
