"""MusicGen: HF `MusicgenForConditionalGeneration` directories <-> codeclm LM exports.

An HF directory holds config.json (model_type "musicgen", with `text_encoder` (T5), `audio_encoder` (EnCodec) and
`decoder` sub-configs), the weights under `text_encoder.`, `audio_encoder.`, `decoder.` and `enc_to_dec_proj.`, and
the T5 tokenizer files. The key map is `decoder_pieces` (docs/interop.md has it as a table); HF's semantics are
ours already: padded text positions are masked in cross-attention, the text is not truncated, and the special
token `card` is both the delay pattern's padding and the first decoder input (HF's pad and decoder-start id).
"""
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import GenerationConfig, MusicgenConfig

from builders import lm_export_directory, resolve_bundled_paths
from codec.codec import CodecConfig
from codec.files import CONFIG_FILE as CODEC_CONFIG, WEIGHTS_FILE as CODEC_WEIGHTS
from interop.encodec import codec_config_from_hf, codec_config_to_hf, codec_state_from_hf, codec_state_to_hf
from interop.export import (CONFIG_FILE, TEXT_ENCODER_DIR, TEXT_PROJECTION, TOKENIZER_FILES, LMExport,
                            write_text_encoder)
from interop.state import ConversionError, Piece, RenamedView, join_pieces, read_weights, split_pieces
from lit.lm_module import WEIGHTS_FILE
from lm.lm import LMConfig

DECODER = "decoder.model.decoder."
# Decoder options codeclm implements only at these values: name -> the value it must have.
REQUIRED_DECODER_OPTIONS = {"activation_function": "gelu", "scale_embedding": False, "audio_channels": 1,
                            "cross_attention_hidden_size": None, "layerdrop": 0.0}

LAYER_PIECES = [  # (HF name in a decoder layer, our name in a transformer block, slice, slices)
    ("self_attn.q_proj.weight", "self_attention.qkv.weight", 0, 3),
    ("self_attn.k_proj.weight", "self_attention.qkv.weight", 1, 3),
    ("self_attn.v_proj.weight", "self_attention.qkv.weight", 2, 3),
    ("self_attn.out_proj.weight", "self_attention.out.weight", 0, 1),
    ("self_attn_layer_norm.weight", "self_attention_norm.weight", 0, 1),
    ("self_attn_layer_norm.bias", "self_attention_norm.bias", 0, 1),
    ("encoder_attn.q_proj.weight", "cross_attention.query.weight", 0, 1),
    ("encoder_attn.k_proj.weight", "cross_attention.key_value.weight", 0, 2),
    ("encoder_attn.v_proj.weight", "cross_attention.key_value.weight", 1, 2),
    ("encoder_attn.out_proj.weight", "cross_attention.out.weight", 0, 1),
    ("encoder_attn_layer_norm.weight", "cross_attention_norm.weight", 0, 1),
    ("encoder_attn_layer_norm.bias", "cross_attention_norm.bias", 0, 1),
    ("fc1.weight", "mlp.0.weight", 0, 1),
    ("fc2.weight", "mlp.2.weight", 0, 1),
    ("final_layer_norm.weight", "mlp_norm.weight", 0, 1),
    ("final_layer_norm.bias", "mlp_norm.bias", 0, 1),
]


def decoder_pieces(config: LMConfig) -> list[Piece]:
    """HF decoder and text projection names -> our LM export names (`model.` and `conditioner.provider.`)."""
    K = config.num_codebooks
    pieces = [Piece(f"{DECODER}embed_tokens.{k}.weight", "model.embedding.weight", k, K) for k in range(K)]
    pieces += [Piece(f"decoder.lm_heads.{k}.weight", "model.heads.weight", k, K) for k in range(K)]
    for layer in range(config.num_layers):
        pieces += [Piece(f"{DECODER}layers.{layer}.{hf}", f"model.transformer.layers.{layer}.{ours}", index, count)
                   for hf, ours, index, count in LAYER_PIECES]
    pieces += [Piece(f"{DECODER}layer_norm.{name}", f"model.transformer.norm.{name}") for name in ("weight", "bias")]
    pieces += [Piece(f"enc_to_dec_proj.{name}", f"{TEXT_PROJECTION}{name}") for name in ("weight", "bias")]
    return pieces


def lm_config_from_hf(decoder: dict, source: str) -> LMConfig:
    """An HF MusicgenDecoderConfig (as a dict) -> LMConfig; options codeclm does not implement are refused by name."""
    for option, required in REQUIRED_DECODER_OPTIONS.items():
        if decoder.get(option, required) != required:
            raise ConversionError(f"{source}: decoder option {option}={decoder[option]!r} is not supported "
                                  f"(codeclm implements {option}={required!r})")
    card = decoder["vocab_size"]
    for token in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        if decoder.get(token, card) not in (card, None):
            raise ConversionError(f"{source}: decoder option {token}={decoder[token]} is not supported (codeclm's "
                                  f"special token is card={card})")
    return LMConfig(num_codebooks=decoder["num_codebooks"], card=card, dim=decoder["hidden_size"],
                    num_heads=decoder["num_attention_heads"], num_layers=decoder["num_hidden_layers"],
                    ffn_dim=decoder["ffn_dim"], cross_attention=True, cross_attention_mask=True, positional="sin",
                    max_period=10000.0)


def read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}: expected an HF model config (JSON)") from error
    return config


def read_composite_config(directory: Path, model: str) -> dict:
    """config.json of an HF MusicGen-family directory, which must hold the three sub-configs."""
    config = read_hf_config(directory)
    for part in ("text_encoder", "audio_encoder", "decoder"):
        if not isinstance(config.get(part), dict):
            raise ConversionError(f"{directory / 'config.json'}: expected a `{part}` sub-config ({model})")
    return config


def convert_hf_musicgen(directory: Path, out: Path) -> None:
    """An HF MusicgenForConditionalGeneration directory -> an LM export in `out` (written by the caller's staging)."""
    source = str(directory)
    config = read_composite_config(directory, "MusicGen")
    lm_config = lm_config_from_hf(config["decoder"], source)
    codec_config = codec_config_from_hf(config["audio_encoder"], source)
    check_codec_fits(lm_config, codec_config, source)
    weights = read_weights(directory)
    groups = split_by_prefix(weights, ("text_encoder.", "audio_encoder."), source)
    text_hidden = config["text_encoder"]["d_model"]
    lm_weights = groups[""]
    if "enc_to_dec_proj.weight" not in lm_weights and text_hidden == lm_config.dim:
        lm_weights = {**lm_weights, "enc_to_dec_proj.weight": torch.eye(text_hidden),  # HF's identity case
                      "enc_to_dec_proj.bias": torch.zeros(text_hidden)}
    export = LMExport(lm=lm_config, codec=codec_config, text_hidden_size=text_hidden, text_max_length=None,
                      converted_from=f"hf_musicgen {source}")
    export.write(out, lm_state=join_pieces(lm_weights, decoder_pieces(lm_config), source),
                 codec_state=codec_state_from_hf(groups["audio_encoder."], codec_config, prefix="", source=source))
    write_text_encoder(config["text_encoder"], groups["text_encoder."], directory, out / TEXT_ENCODER_DIR)


def check_codec_fits(lm_config: LMConfig, codec_config: CodecConfig, source: str) -> None:
    """Refuse a checkpoint whose decoder predicts other codes than its audio encoder makes."""
    if (codec_config.quantizer.num_codebooks, codec_config.quantizer.codebook_size) != (
            lm_config.num_codebooks, lm_config.card):
        raise ConversionError(f"{source}: the decoder predicts {lm_config.num_codebooks} x {lm_config.card} codes but "
                              f"the audio encoder has {codec_config.quantizer.num_codebooks} x "
                              f"{codec_config.quantizer.codebook_size}")


def split_by_prefix(weights: Mapping[str, Tensor], prefixes: tuple[str, ...], source: str
                    ) -> dict[str, Mapping[str, Tensor]]:
    """{prefix: lazy view of the names under it, prefix removed}, with "" for the names under none of them."""
    names: dict[str, dict[str, str]] = {prefix: {} for prefix in ("", *prefixes)}
    for name in weights:
        prefix = next((prefix for prefix in prefixes if name.startswith(prefix)), "")
        names[prefix][name[len(prefix):]] = name
    for prefix in prefixes:
        if not names[prefix]:
            raise ConversionError(f"{source}: no weights under `{prefix}`")
    return {prefix: RenamedView(weights, group) for prefix, group in names.items()}


def hf_decoder_config(lm: LMConfig) -> dict:
    """LMConfig -> the keyword arguments of an HF MusicgenDecoderConfig."""
    return {"vocab_size": lm.card, "num_codebooks": lm.num_codebooks, "hidden_size": lm.dim,
            "num_attention_heads": lm.num_heads, "num_hidden_layers": lm.num_layers, "ffn_dim": lm.ffn_dim,
            "pad_token_id": lm.card, "bos_token_id": lm.card, "decoder_start_token_id": lm.card,
            "activation_function": "gelu", "scale_embedding": False, "audio_channels": 1}


def check_exportable(cfg: DictConfig, source: str) -> None:
    """Refuse, by config key, an LM export that HF's MusicgenForConditionalGeneration cannot reproduce."""
    model, pattern, conditioner = cfg.lm.model, cfg.lm.pattern, cfg.conditioner
    if "melody" in conditioner.chroma:
        raise ConversionError(f"{source}: conditioner.chroma.melody: exporting MusicGen-Melody (a melody conditioner) "
                              f"to HF is not implemented; MusicGen exports are")
    delays = list(range(model.num_codebooks)) if pattern.delays is None else list(pattern.delays)
    required = {  # key: (value, HF's)
        "lm.pattern.kind": (pattern.kind, "delay"),
        "lm.pattern.delays": (delays, list(range(model.num_codebooks))),
        "lm.model.positional": (model.positional, "sin"),
        "lm.model.max_period": (model.max_period, 10000.0),
        "lm.model.cross_attention": (model.cross_attention, True),
        "lm.model.cross_attention_mask": (model.cross_attention_mask, True),
        "conditioner.text": (sorted(conditioner.text), ["description"]),
        "conditioner.lookup": (len(conditioner.lookup), 0),
        "conditioner.chroma": (len(conditioner.chroma), 0),
        "conditioner.fuser.description": (conditioner.fuser.get("description"), "cross"),
        "conditioner.text.description.pooling": (conditioner.text.get("description", {}).get("pooling"), "tokens"),
        "conditioner.text.description.max_length": (conditioner.text.get("description", {}).get("max_length"), None),
    }
    for key, (value, hf_value) in required.items():
        if value != hf_value:
            raise ConversionError(f"{source}: {key}={value!r} has no HF MusicGen equivalent (HF: {hf_value!r})")


def export_hf_musicgen(run: Path, out: Path) -> None:
    """An LM export with a T5 text conditioner -> an HF MusicgenForConditionalGeneration directory in `out`."""
    directory = lm_export_directory(run)
    cfg = OmegaConf.load(directory / CONFIG_FILE)
    source = str(directory)
    check_exportable(cfg, source)
    resolve_bundled_paths(cfg, directory)
    lm_config = LMConfig(**cfg.lm.model)
    text_dir, codec_dir = Path(cfg.conditioner.text.description.encoder), Path(cfg.codec_dir)
    text_config = read_hf_config(text_dir)
    codec_config = CodecConfig(**json.loads((codec_dir / CODEC_CONFIG).read_text()))
    lm_state = load_file(directory / WEIGHTS_FILE)
    if text_config.get("d_model") == lm_config.dim:  # HF then has no projection: ours must be the identity
        weight, bias = lm_state.pop(TEXT_PROJECTION + "weight"), lm_state.pop(TEXT_PROJECTION + "bias")
        if not (torch.equal(weight, torch.eye(lm_config.dim)) and not bias.any()):
            raise ConversionError(f"{source}: the text encoder is as wide as the LM, so HF MusicGen applies no "
                                  f"projection, but this export's text projection is not the identity")
    pieces = [piece for piece in decoder_pieces(lm_config)
              if not piece.target.startswith(TEXT_PROJECTION) or TEXT_PROJECTION + "weight" in lm_state]
    weights = split_pieces(lm_state, pieces, source)
    weights |= {f"text_encoder.{name}": tensor for name, tensor in read_weights(text_dir).items()}
    weights |= codec_state_to_hf(load_file(codec_dir / CODEC_WEIGHTS), codec_config, prefix="audio_encoder.")
    config = MusicgenConfig(text_encoder=text_config, audio_encoder=codec_config_to_hf(codec_config),
                            decoder=hf_decoder_config(lm_config))
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    generation = cfg.generation
    GenerationConfig(decoder_start_token_id=lm_config.card, pad_token_id=lm_config.card,
                     bos_token_id=lm_config.card, do_sample=True, guidance_scale=generation.cfg_coef,
                     top_k=generation.top_k, temperature=generation.temperature,
                     max_length=1500).save_pretrained(out)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, out / "model.safetensors",
              metadata={"format": "pt"})
    for path in text_dir.iterdir():
        if path.name in TOKENIZER_FILES:
            shutil.copyfile(path, out / path.name)
