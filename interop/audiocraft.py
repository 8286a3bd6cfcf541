"""AudioCraft MusicGen folders -> codeclm LM exports.

A released AudioCraft model is a folder of two torch files (audiocraft/utils/export.py):

    state_dict.bin              {'best_state': LM state dict, 'xp.cfg': the training config as YAML, ...}
    compression_state_dict.bin  {'best_state': codec state dict, 'xp.cfg': ...}, or {'pretrained': 'facebook/
                                encodec_32khz'}: a redirect to an HF EnCodec directory, given here as `codec`

The frozen T5 is not in the LM state (AudioCraft keeps it out of the module tree and loads `t5-base` from the hub),
so a local T5 directory is given as `text_encoder`. AudioCraft's cross-attention takes no key-padding mask: the
export sets `lm.model.cross_attention_mask: false`, so padded text positions take softmax mass as they do there.
"""
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from interop.encodec import (codec_config_from_audiocraft, codec_config_from_hf, codec_state_from_audiocraft,
                             codec_state_from_hf)
from interop.export import TEXT_ENCODER_DIR, TEXT_PROJECTION, LMExport, write_text_encoder
from interop.musicgen import check_codec_fits, read_hf_config
from interop.state import ConversionError, Piece, join_pieces, load_torch_file, read_weights
from lm.lm import LMConfig

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
# transformer_lm options codeclm implements only at these values (AudioCraft config/model/lm/musicgen_lm.yaml).
REQUIRED_LM_OPTIONS = {"norm_first": True, "bias_ff": False, "bias_attn": False, "bias_proj": False,
                       "layer_scale": None, "positional_embedding": "sin", "positional_scale": 1.0, "xpos": False,
                       "activation": "gelu", "norm": "layer_norm", "qk_layer_norm": False,
                       "qk_layer_norm_cross": False, "kv_repeat": 1, "past_context": None, "causal": True,
                       "cross_attention": True}
LAYER_PIECES = [  # (AudioCraft name in a transformer layer, ours in a block, slice, slices)
    ("self_attn.in_proj_weight", "self_attention.qkv.weight", 0, 1),  # q, k, v stacked as in our qkv
    ("self_attn.out_proj.weight", "self_attention.out.weight", 0, 1),
    ("cross_attention.in_proj_weight:query", "cross_attention.query.weight", 0, 1),  # rows [:D] of in_proj
    ("cross_attention.in_proj_weight:key_value", "cross_attention.key_value.weight", 0, 1),  # rows [D:]
    ("cross_attention.out_proj.weight", "cross_attention.out.weight", 0, 1),
    ("norm1.weight", "self_attention_norm.weight", 0, 1),
    ("norm1.bias", "self_attention_norm.bias", 0, 1),
    ("norm_cross.weight", "cross_attention_norm.weight", 0, 1),
    ("norm_cross.bias", "cross_attention_norm.bias", 0, 1),
    ("linear1.weight", "mlp.0.weight", 0, 1),
    ("linear2.weight", "mlp.2.weight", 0, 1),
    ("norm2.weight", "mlp_norm.weight", 0, 1),
    ("norm2.bias", "mlp_norm.bias", 0, 1),
]
OUTPUT_PROJECTION = "condition_provider.conditioners.description.output_proj."


def lm_pieces(config: LMConfig) -> list[Piece]:
    K = config.num_codebooks
    pieces = [Piece(f"emb.{k}.weight", "model.embedding.weight", k, K) for k in range(K)]
    pieces += [Piece(f"linears.{k}.weight", "model.heads.weight", k, K) for k in range(K)]
    for layer in range(config.num_layers):
        pieces += [Piece(f"transformer.layers.{layer}.{theirs}", f"model.transformer.layers.{layer}.{ours}", index,
                         count) for theirs, ours, index, count in LAYER_PIECES]
    pieces += [Piece(f"out_norm.{name}", f"model.transformer.norm.{name}") for name in ("weight", "bias")]
    pieces += [Piece(f"{OUTPUT_PROJECTION}{name}", f"{TEXT_PROJECTION}{name}") for name in ("weight", "bias")]
    return pieces


def read_package(path: Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path} not found: an AudioCraft folder holds {LM_FILE} and {CODEC_FILE}")
    package = load_torch_file(path)
    if not isinstance(package, dict) or not ("best_state" in package or "pretrained" in package):
        raise ConversionError(f"{path}: expected an AudioCraft export ({{'best_state', 'xp.cfg'}} or {{'pretrained'}})")
    return package


def read_xp_config(package: dict, path: Path) -> DictConfig:
    try:
        return OmegaConf.create(package["xp.cfg"])
    except Exception as error:  # noqa: BLE001 - OmegaConf raises several kinds on bad YAML
        raise ConversionError(f"{path}: 'xp.cfg' is not the YAML training config ({error})") from error


def lm_config_from_audiocraft(xp: DictConfig, source: str) -> LMConfig:
    """AudioCraft's `transformer_lm`, `codebooks_pattern`, `fuser` and `conditioners` -> LMConfig; anything
    codeclm does not implement is refused by its AudioCraft key."""
    lm = xp.transformer_lm
    for option, required in REQUIRED_LM_OPTIONS.items():
        if lm.get(option, required) != required:
            raise ConversionError(f"{source}: transformer_lm.{option}={lm[option]!r} is not supported (codeclm "
                                  f"implements {option}={required!r})")
    pattern = xp.codebooks_pattern
    delays = list(pattern.get("delay", {}).get("delays", []))
    if pattern.modeling != "delay" or delays != list(range(lm.n_q)):
        raise ConversionError(f"{source}: codebooks_pattern modeling={pattern.modeling!r}, delays={delays} is not "
                              f"supported (codeclm converts MusicGen's delay pattern 0..{lm.n_q - 1})")
    for option in ("flatten_first", "empty_initial"):
        if pattern.delay.get(option, 0):
            raise ConversionError(f"{source}: codebooks_pattern.delay.{option} must be 0")
    fuser = {route: list(xp.fuser.get(route, [])) for route in ("cross", "prepend", "sum", "input_interpolate")}
    if fuser != {"cross": ["description"], "prepend": [], "sum": [], "input_interpolate": []} or xp.fuser.get(
            "cross_attention_pos_emb", False):
        raise ConversionError(f"{source}: fuser {fuser} is not supported (codeclm converts text-to-music: "
                              f"cross: [description], no positional embedding on the memory)")
    conditioner = xp.conditioners.description
    if conditioner.model != "t5" or conditioner.t5.get("finetune", False):
        raise ConversionError(f"{source}: conditioners.description model={conditioner.model!r} is not supported "
                              f"(codeclm converts a frozen T5)")
    return LMConfig(num_codebooks=lm.n_q, card=lm.card, dim=lm.dim, num_heads=lm.num_heads,
                    num_layers=lm.num_layers, ffn_dim=int(lm.hidden_scale * lm.dim), cross_attention=True,
                    cross_attention_mask=False, positional="sin", max_period=float(lm.get("max_period", 10000)))


def split_cross_projections(state: Mapping[str, Tensor], dim: int) -> dict[str, Tensor]:
    """AudioCraft's fused cross-attention in_proj [3D, D] -> `:query` [D, D] and `:key_value` [2D, D]; the
    `mha.` infix of AudioCraft's non-custom attention is dropped (its own loader does the same)."""
    split = {}
    for name, tensor in state.items():
        name = name.replace(".mha.", ".")
        if name.endswith("cross_attention.in_proj_weight"):
            split[f"{name}:query"], split[f"{name}:key_value"] = tensor[:dim], tensor[dim:]
        else:
            split[name] = tensor
    return split


def convert_audiocraft(directory: Path, out: Path, codec: Path | None, text_encoder: Path | None) -> None:
    source = str(directory)
    lm_package = read_package(directory / LM_FILE)
    xp = read_xp_config(lm_package, directory / LM_FILE)
    lm_config = lm_config_from_audiocraft(xp, source)
    if text_encoder is None:
        raise ConversionError(f"{source}: its T5 ({xp.conditioners.description.t5.name}) is not in the checkpoint: "
                              f"give a local copy with --text-encoder DIR")
    codec_package = read_package(directory / CODEC_FILE)
    if "pretrained" in codec_package:
        if codec is None:
            raise ConversionError(f"{directory / CODEC_FILE} redirects to {codec_package['pretrained']!r}: give a "
                                  f"local copy of that HF EnCodec directory with --codec DIR")
        hf_codec = read_hf_config(codec)
        codec_config = codec_config_from_hf(hf_codec, str(codec))
        codec_state = codec_state_from_hf(read_weights(codec), codec_config, prefix="", source=str(codec))
    else:
        codec_xp = read_xp_config(codec_package, directory / CODEC_FILE)
        codec_config = codec_config_from_audiocraft(codec_xp, str(directory / CODEC_FILE))
        codec_state = codec_state_from_audiocraft(codec_package["best_state"], codec_config,
                                                  str(directory / CODEC_FILE))
    check_codec_fits(lm_config, codec_config, source)
    t5_config = read_hf_config(text_encoder)
    lm_state = join_pieces(split_cross_projections(lm_package["best_state"], lm_config.dim), lm_pieces(lm_config),
                           str(directory / LM_FILE))
    export = LMExport(lm=lm_config, codec=codec_config, text_hidden_size=t5_config["d_model"], text_max_length=None,
                      converted_from=f"audiocraft {source}")
    export.write(out, lm_state=lm_state, codec_state=codec_state)
    t5_weights = read_weights(text_encoder)
    # A full T5 (t5-base on the hub is T5ForConditionalGeneration) also holds a decoder that conditioning never uses.
    encoder_only = {name: t5_weights[name] for name in t5_weights if not name.startswith(("decoder.", "lm_head."))}
    write_text_encoder(t5_config, encoder_only, text_encoder, out / TEXT_ENCODER_DIR)
