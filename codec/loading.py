"""A codec config or a saved codec directory -> the codec it describes: `Codec` (residual VQ, codec/codec.py) or
`SNACCodec` (multi-scale RVQ, codec/snac.py).

The two are told apart by their config's keys: only `SNACConfig` has `encoder_rates` (and quantizer strides),
only `CodecConfig` has `seanet`. Both store themselves the same way (`save`: config.json + model.safetensors), so
whatever loads "a codec directory" (token extraction, the LM stage's validation audio) goes through `load_codec`.
"""
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from codec.codec import Codec, CodecConfig
from codec.files import CONFIG_FILE
from codec.snac import SNACCodec, SNACConfig


def is_multiscale(config: Mapping) -> bool:
    """True for a SNACConfig mapping (a composed `codec:` node or a config.json), False for a CodecConfig one."""
    return "encoder_rates" in config


def build_codec(config: Mapping) -> Codec | SNACCodec:
    """A freshly initialised codec from the plain mapping of its config."""
    return SNACCodec(SNACConfig(**config)) if is_multiscale(config) else Codec(CodecConfig(**config))


def load_codec(directory: str | Path, device: str | torch.device = "cpu") -> Codec | SNACCodec:
    """A directory written by `Codec.save` or `SNACCodec.save` -> that codec, in eval mode."""
    config_file = Path(directory) / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a directory written by Codec.save or SNACCodec.save")
    kind = SNACCodec if is_multiscale(json.loads(config_file.read_text())) else Codec
    return kind.load(directory, device=device)
