"""DAC checkpoints (descript-audio-codec, Kumar et al. 2023) -> codeclm's Codec.

    DAC weights file (.pth: {"state_dict", "metadata": {"kwargs"}})  --convert_dac-->  Codec directory (Codec.save)

The file is what `DAC.save(path, package=False)` writes and what DAC releases (`weights_24khz.pth`, ...):
`metadata["kwargs"]` holds DAC's constructor arguments, from which the whole architecture follows (DAC has no
other options), and `state_dict` its weights. The converted codec is the `dac` padding convention of our SEANet
(codec/seanet.py) with the factorized lookup, and computes the same codes and audio (tests/interop/test_dac.py).

Key map (n = len(encoder_rates); DAC's blocks are nested, ours are one flat list per side):

    encoder.block.0                      -> encoder.layers.0                 first conv
    encoder.block.b.block.j (b in 1..n)  -> encoder.layers.{5(b-1)+1+j}      3 residual units, Snake, strided conv
    encoder.block.{n+1}, {n+2}           -> encoder.layers.{5n+1}, {5n+2}    Snake, last conv
    decoder.model.0, .b.block.j, ...     -> decoder.layers.*                 same (Snake, transposed conv, 3 units)
    quantizer.quantizers.i.{in_proj,out_proj,codebook.weight} -> quantizer.codebooks.i.{in_proj,out_proj,codebook}

Weight norm: DAC's legacy `weight_g` / `weight_v` are our parametrization's `original0` / `original1`. Our usage
statistics (`usage`, `initialized`, training-only) start empty, as for a fresh codebook.
"""

import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from codec.codec import CodecConfig
from codec.rvq import QuantizerConfig
from codec.seanet import SEANetConfig
from interop.encodec import WEIGHT_NORM_NAMES, meta_codec, write_codec
from interop.state import ConversionError, check_state, load_torch_file, rename

# Every constructor argument of dac.DAC (1.0.0); `DAC.save` stores them all.
DAC_KWARGS = {"encoder_dim", "encoder_rates", "latent_dim", "decoder_dim", "decoder_rates", "n_codebooks",
              "codebook_size", "codebook_dim", "quantizer_dropout", "sample_rate"}
LAYERS_PER_BLOCK = 5  # residual units (3), Snake, (transposed) strided conv: one DAC Encoder/DecoderBlock
# DAC's convs use torch's legacy weight norm; Snake has `alpha`.
PARAMETER_NAMES = {"alpha": "alpha", "bias": "bias", **WEIGHT_NORM_NAMES}


def _is_torch_package(path: Path) -> bool:
    """A torch.package archive (`DAC.save`'s default) stores `<name>/.data/*.storage` and no `data.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/.data/" in name for name in names) and not any(name.endswith("/data.pkl") for name in names)


def read_dac_file(path: Path) -> tuple[Mapping[str, Tensor], dict[str, Any]]:
    """A DAC weights file -> (state_dict, constructor kwargs), read without executing pickled code."""
    source = str(path)
    if _is_torch_package(path):
        raise ConversionError(f"{source}: a torch.package archive (DAC.save's default), whose loading runs the code "
                              f"it packs; convert a weights file, as DAC releases them: DAC.save(path, package=False)")
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, Mapping) or not {"state_dict", "metadata"} <= set(checkpoint):
        found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ConversionError(f"{source}: expected a DAC weights file, a dict with 'state_dict' and 'metadata' "
                              f"(DAC.save(path, package=False)), got {found}")
    metadata = checkpoint["metadata"]
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("kwargs"), Mapping):
        raise ConversionError(f"{source}: metadata has no 'kwargs' mapping (DAC's constructor arguments)")
    return checkpoint["state_dict"], dict(metadata["kwargs"])


def codec_config_from_dac(kwargs: Mapping[str, Any], source: str) -> CodecConfig:
    """DAC's constructor kwargs -> the CodecConfig of the same network.

    Refused: decoder_rates other than encoder_rates reversed (our SEANet has one list of ratios), a per-codebook
    list of different codebook_dims, a decoder_dim that does not halve evenly at every up-sampling. Training-only:
    quantizer_dropout -> dropout (DAC drops the first items of a batch, codeclm random items); no dead-code
    restart (DAC has none).
    """
    missing, unknown = sorted(DAC_KWARGS - set(kwargs)), sorted(set(kwargs) - DAC_KWARGS)
    if missing:
        raise ConversionError(f"{source}: metadata kwargs lack {missing}")
    if unknown:
        raise ConversionError(f"{source}: metadata kwargs has options codeclm does not know: {unknown}")
    encoder_rates, decoder_rates = list(kwargs["encoder_rates"]), list(kwargs["decoder_rates"])
    if decoder_rates != encoder_rates[::-1]:
        raise ConversionError(f"{source}: decoder_rates={decoder_rates} is not supported (codeclm's decoder "
                              f"up-samples by the encoder's rates reversed: {encoder_rates[::-1]})")
    codebook_dim = kwargs["codebook_dim"]
    if isinstance(codebook_dim, (list, tuple)):
        if len(set(codebook_dim)) != 1:
            raise ConversionError(f"{source}: codebook_dim={codebook_dim} is not supported (codeclm has one "
                                  f"codebook_dim for all codebooks)")
        codebook_dim = codebook_dim[0]
    upsamplings = 2 ** len(decoder_rates)
    if kwargs["decoder_dim"] % upsamplings:
        raise ConversionError(f"{source}: decoder_dim={kwargs['decoder_dim']} is not supported (codeclm halves the "
                              f"decoder width {len(decoder_rates)} times: a multiple of {upsamplings})")
    latent_dim = kwargs["latent_dim"]
    if latent_dim is None:  # DAC's default: the encoder's last width
        latent_dim = kwargs["encoder_dim"] * 2 ** len(encoder_rates)
    try:
        seanet = SEANetConfig(
            dimension=latent_dim,
            n_filters=kwargs["encoder_dim"],
            decoder_n_filters=kwargs["decoder_dim"] // upsamplings,
            ratios=tuple(decoder_rates),
            n_residual_layers=3,
            dilation_base=3,
            kernel_size=7,
            last_kernel_size=7,
            encoder_last_kernel_size=3,
            residual_kernel_size=7,
            compress=1,
            lstm_layers=0,
            activation="snake",
            causal=False,
            pad_mode="constant",
            padding_convention="dac",
            true_skip=True,
            final_tanh=True,
        )
        num_codebooks, codebook_size = kwargs["n_codebooks"], kwargs["codebook_size"]
        sample_rate = kwargs["sample_rate"]
        config = CodecConfig(
            sample_rate=sample_rate,
            channels=1,
            seanet=seanet,
            quantizer=QuantizerConfig(
                num_codebooks=num_codebooks,
                codebook_size=codebook_size,
                lookup="factorized",
                codebook_dim=codebook_dim,
                dead_code_threshold=0.0,
                dropout=float(kwargs["quantizer_dropout"]),
            ),
            bandwidths=(num_codebooks * sample_rate / seanet.hop_length * math.log2(codebook_size) / 1000,),
        )
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{source}: {error}") from error
    meta_codec(config, source)
    return config


def _layer_index(block: int, inner: int | None, num_blocks: int) -> int:
    """DAC's nested index (block, index inside the block or None) -> our flat layer index; see the module map."""
    if inner is not None:
        return LAYERS_PER_BLOCK * (block - 1) + 1 + inner
    if block == 0:
        return 0
    return LAYERS_PER_BLOCK * num_blocks + block - num_blocks  # the Snake and conv after the last block


def codec_state_from_dac(state_dict: Mapping[str, Tensor], config: CodecConfig, source: str) -> dict[str, Tensor]:
    """DAC's state_dict -> a state dict that fills Codec(config) exactly (every DAC key mapped, or refused)."""
    num_blocks = len(config.seanet.ratios)

    def layer_name(match: re.Match) -> str:
        side, block, inner, unit_layer, parameter = match.groups()
        index = _layer_index(int(block), None if inner is None else int(inner), num_blocks)
        unit = "" if unit_layer is None else f"block.{unit_layer}."
        if parameter == "alpha":
            return f"{side}.layers.{index}.{unit}alpha"
        transposed = side == "decoder" and inner == "1" and unit_layer is None  # DecoderBlock: Snake, then this
        return f"{side}.layers.{index}.{unit}{'convtr' if transposed else 'conv'}.{PARAMETER_NAMES[parameter]}"

    nested = r"(\d+)\.(?:block\.(\d+)\.(?:block\.(\d+)\.)?)?(alpha|bias|weight_g|weight_v)"
    rules = [
        (rf"(encoder)\.block\.{nested}", layer_name),
        (rf"(decoder)\.model\.{nested}", layer_name),
        (r"quantizer\.quantizers\.(\d+)\.(in_proj|out_proj)\.(bias|weight_g|weight_v)",
         lambda match: f"quantizer.codebooks.{match[1]}.{match[2]}.{PARAMETER_NAMES[match[3]]}"),
        (r"quantizer\.quantizers\.(\d+)\.codebook\.weight", r"quantizer.codebooks.\1.codebook"),
    ]
    state = rename(state_dict, rules, source)
    for k in range(config.quantizer.num_codebooks):
        state[f"quantizer.codebooks.{k}.usage"] = torch.zeros(config.quantizer.codebook_size)
        state[f"quantizer.codebooks.{k}.initialized"] = torch.tensor(False)
    check_state(state, meta_codec(config, source), source)
    return state


def convert_dac(source: Path, out: Path) -> None:
    """A DAC weights file -> a codec directory at `out` (config.json + model.safetensors)."""
    state_dict, kwargs = read_dac_file(source)
    config = codec_config_from_dac(kwargs, str(source))
    write_codec(config, codec_state_from_dac(state_dict, config, str(source)), out)
