"""SNAC checkpoints (the `snac` package, hubertsiuzdak/snac_24khz, ...) -> codeclm's SNACCodec.

    SNAC directory (config.json + pytorch_model.bin)  --convert_snac-->  SNACCodec directory (SNACCodec.save)

SNAC's `config.json` is its constructor's keyword arguments (`SNAC.from_config`): a missing key takes the
constructor's default, as `snac` itself does. The converted codec computes the same codes and, with the same
seed for the noise blocks, the same audio (tests/interop/test_snac.py).

Key map (n = number of rates; a = 1 with local attention, else 0; d = 2 with depthwise, else 1; SNAC's Sequential
indices depend on the options, ours are names):

    encoder.block.0                       -> encoder.input_conv
    encoder.block.{1+i}.block.{0,1,2}     -> encoder.blocks.i.residual_units.{0,1,2}     (.block.m alike)
    encoder.block.{1+i}.block.{3,4}       -> encoder.blocks.i.{activation, downsample.conv}
    encoder.block.{n+1}                   -> encoder.attention                          (when a = 1)
    encoder.block.{n+1+a}                 -> encoder.output_conv
    decoder.model.{0..d-1}                -> decoder.input_convs.{0..d-1}
    decoder.model.d                       -> decoder.attention                          (when a = 1)
    decoder.model.{d+a+i}.block.{0,1}     -> decoder.blocks.i.{activation, upsample.convtr}
    decoder.model.{d+a+i}.block.2.linear  -> decoder.blocks.i.noise.scale               (with noise)
    decoder.model.{d+a+i}.block.{2|3+j}   -> decoder.blocks.i.residual_units.j
    decoder.model.{d+a+n}, {d+a+n+1}      -> decoder.output_activation, decoder.output_conv
    quantizer.quantizers.k.{in_proj, out_proj, codebook.weight} -> quantizer.codebooks.k.{in_proj, out_proj, codebook}
    attention: to_qkv, to_out -> qkv, out; rel_pos.inv_freq is checked against ours (recomputed) and dropped.

Weight norm: legacy `weight_g` / `weight_v` are `parametrizations.weight.original0` / `original1`. Our usage
statistics (`usage`, `initialized`, training-only) start empty, as for a fresh codebook.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from codec.local_attention import ROTARY_MAX_PERIOD
from codec.multiscale_rvq import MultiScaleQuantizerConfig
from codec.files import CONFIG_FILE, WEIGHTS_FILE
from codec.snac import SNACCodec, SNACConfig
from interop.encodec import WEIGHT_NORM_NAMES
from interop.state import TORCH_FILE, ConversionError, check_state, load_torch_file, rename

# snac.SNAC's constructor arguments (1.2.1) with their defaults: a config.json key left out takes its default.
SNAC_DEFAULTS: dict[str, Any] = dict(
    sampling_rate=44100, encoder_dim=64, encoder_rates=[3, 3, 7, 7], latent_dim=None, decoder_dim=1536,
    decoder_rates=[7, 7, 3, 3], attn_window_size=32, codebook_size=4096, codebook_dim=8, vq_strides=[8, 4, 2, 1],
    noise=True, depthwise=True,
)
SNAC_HEAD_DIM = 64  # snac's LocalMHA fixes dim_head
ATTENTION_NAMES = {"to_qkv": "qkv", "to_out": "out"}


def snac_config_from_kwargs(kwargs: Mapping[str, Any], source: str) -> SNACConfig:
    """snac.SNAC's constructor kwargs -> the SNACConfig of the same network.

    Refused: unknown options, and a latent_dim other than encoder_dim * 2 ** len(encoder_rates) (SNAC's encoder
    always ends at that width, so its quantizer could not read another). Training-only: no dead-code restart
    (SNAC's repository has no training code).
    """
    unknown = sorted(set(kwargs) - set(SNAC_DEFAULTS))
    if unknown:
        raise ConversionError(f"{source}: options codeclm does not know: {unknown} (snac.SNAC takes "
                              f"{sorted(SNAC_DEFAULTS)})")
    options = {**SNAC_DEFAULTS, **kwargs}
    try:
        config = SNACConfig(
            sample_rate=options["sampling_rate"],
            channels=1,
            encoder_dim=options["encoder_dim"],
            encoder_rates=tuple(options["encoder_rates"]),
            decoder_dim=options["decoder_dim"],
            decoder_rates=tuple(options["decoder_rates"]),
            attention_window=options["attn_window_size"],
            attention_head_dim=SNAC_HEAD_DIM,
            noise=bool(options["noise"]),
            depthwise=bool(options["depthwise"]),
            quantizer=MultiScaleQuantizerConfig(
                strides=tuple(options["vq_strides"]),
                codebook_size=options["codebook_size"],
                codebook_dim=options["codebook_dim"],
                dead_code_threshold=0.0,
            ),
        )
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{source}: {error}") from error
    if options["latent_dim"] not in (None, config.latent_dim):
        raise ConversionError(f"{source}: latent_dim={options['latent_dim']} is not supported (SNAC's encoder "
                              f"outputs encoder_dim * 2 ** len(encoder_rates) = {config.latent_dim} channels)")
    meta_snac(config, source)
    return config


def meta_snac(config: SNACConfig, source: str) -> SNACCodec:
    """The module converted weights must fill, built on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            return SNACCodec(config)
    except ValueError as error:
        raise ConversionError(f"{source}: {error}") from error


def _module_map(config: SNACConfig) -> dict[str, str]:
    """SNAC module prefix -> ours, for every module that holds weights (see the module docstring)."""
    n = len(config.encoder_rates)
    attention = int(config.attention_window is not None)
    modules = {"encoder.block.0": "encoder.input_conv"}
    for i in range(n):
        block, ours = f"encoder.block.{1 + i}.block", f"encoder.blocks.{i}"
        modules.update({f"{block}.{j}": f"{ours}.residual_units.{j}" for j in range(3)})
        modules.update({f"{block}.3": f"{ours}.activation", f"{block}.4": f"{ours}.downsample.conv"})
    if attention:
        modules[f"encoder.block.{n + 1}"] = "encoder.attention"
    modules[f"encoder.block.{n + 1 + attention}"] = "encoder.output_conv"

    input_convs = 2 if config.depthwise else 1
    modules.update({f"decoder.model.{j}": f"decoder.input_convs.{j}" for j in range(input_convs)})
    if attention:
        modules[f"decoder.model.{input_convs}"] = "decoder.attention"
    first_block = input_convs + attention
    for i in range(len(config.decoder_rates)):
        block, ours = f"decoder.model.{first_block + i}.block", f"decoder.blocks.{i}"
        modules.update({f"{block}.0": f"{ours}.activation", f"{block}.1": f"{ours}.upsample.convtr"})
        if config.noise:
            modules[f"{block}.2.linear"] = f"{ours}.noise.scale"
        first_unit = 3 if config.noise else 2
        modules.update({f"{block}.{first_unit + j}": f"{ours}.residual_units.{j}" for j in range(3)})
    last = first_block + len(config.decoder_rates)
    modules.update({f"decoder.model.{last}": "decoder.output_activation",
                    f"decoder.model.{last + 1}": "decoder.output_conv"})
    for k in range(len(config.quantizer.strides)):
        modules.update({f"quantizer.quantizers.{k}.{projection}": f"quantizer.codebooks.{k}.{projection}"
                        for projection in ("in_proj", "out_proj")})
    return modules


def _parameter_name(name: str) -> str:
    """SNAC's name of a tensor inside its module -> ours (weight norm, attention projections)."""
    head, _, tail = name.partition(".")
    if head in ATTENTION_NAMES:
        return f"{ATTENTION_NAMES[head]}.{tail}"
    path, _, last = name.rpartition(".")
    return f"{path}.{WEIGHT_NORM_NAMES[last]}".lstrip(".") if last in WEIGHT_NORM_NAMES else name


def _check_rotary_frequencies(state_dict: Mapping[str, Tensor], source: str) -> None:
    """SNAC stores its rotary frequencies; ours are recomputed, so a file with other ones is refused."""
    expected = ROTARY_MAX_PERIOD ** (-torch.arange(0, SNAC_HEAD_DIM, 2).float() / SNAC_HEAD_DIM)
    for name in state_dict:
        if name.endswith(".rel_pos.inv_freq"):
            stored = state_dict[name].float()
            if stored.shape != expected.shape or not torch.allclose(stored, expected, rtol=1e-5, atol=0):
                raise ConversionError(f"{source}: {name} holds rotary frequencies other than base "
                                      f"{ROTARY_MAX_PERIOD:g} over {SNAC_HEAD_DIM} dims, which codeclm computes")


def codec_state_from_snac(state_dict: Mapping[str, Tensor], config: SNACConfig, source: str) -> dict[str, Tensor]:
    """SNAC's state_dict -> a state dict that fills SNACCodec(config) exactly (every SNAC key mapped, or refused)."""
    _check_rotary_frequencies(state_dict, source)
    rules = [(r"(?:en|de)coder\.(?:block|model)\.\d+\.rel_pos\.inv_freq", "")]
    for snac_module, our_module in _module_map(config).items():
        rules.append((rf"{re.escape(snac_module)}\.(.+)",
                      lambda match, our_module=our_module: f"{our_module}.{_parameter_name(match[1])}"))
    rules.append((r"quantizer\.quantizers\.(\d+)\.codebook\.weight", r"quantizer.codebooks.\1.codebook"))
    state = rename(state_dict, rules, source)
    for k in range(len(config.quantizer.strides)):
        state[f"quantizer.codebooks.{k}.usage"] = torch.zeros(config.quantizer.codebook_size)
        state[f"quantizer.codebooks.{k}.initialized"] = torch.tensor(False)
    check_state(state, meta_snac(config, source), source)
    return state


def read_snac_directory(directory: Path) -> tuple[Mapping[str, Tensor], dict[str, Any]]:
    """A SNAC directory -> (state_dict, constructor kwargs), read without executing pickled code."""
    config_file, weights_file = directory / CONFIG_FILE, directory / TORCH_FILE
    for path in (config_file, weights_file):
        if not path.is_file():
            raise ConversionError(f"{path} not found: a SNAC directory holds {CONFIG_FILE} and {TORCH_FILE}")
    try:
        kwargs = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{config_file}: not valid JSON ({error})") from error
    if not isinstance(kwargs, dict) or "vq_strides" not in kwargs:  # SNAC names no model type; this key is its own
        raise ConversionError(f"{config_file}: not a SNAC config (snac.SNAC's keyword arguments with 'vq_strides')")
    state_dict = load_torch_file(weights_file)
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"{weights_file}: expected a state dict, got {type(state_dict).__name__}")
    return state_dict, kwargs


def convert_snac(source: Path, out: Path) -> None:
    """A SNAC directory -> a SNACCodec directory at `out` (config.json + model.safetensors)."""
    state_dict, kwargs = read_snac_directory(source)
    config = snac_config_from_kwargs(kwargs, str(source / CONFIG_FILE))
    state = codec_state_from_snac(state_dict, config, str(source / TORCH_FILE))
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, out / WEIGHTS_FILE)
