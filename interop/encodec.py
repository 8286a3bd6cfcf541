"""EnCodec checkpoints <-> codeclm's Codec: HF `EncodecModel` directories, AudioCraft / `encodec` package states.

    HF directory (config.json model_type "encodec")  --convert_hf_encodec-->  Codec directory (Codec.save layout)
    Codec directory  --codec_to_hf-->  HF directory that `transformers.EncodecModel.from_pretrained` loads
    AudioCraft `compression_state_dict.bin` {'best_state', 'xp.cfg'}  --codec_{config,state}_from_audiocraft-->

The three compute the same thing (SEANet, Euclidean residual VQ, weight norm); what differs is key names and a
few switches. docs/interop.md has the key tables. A conversion reads one tensor at a time and never builds the
model (only an empty one on the meta device, to check names and shapes), so it needs about one checkpoint of
memory.

Options that change what the model computes and that codeclm does not implement are refused by name
(ConversionError). Training-only options are mapped where codeclm has them (EMA decay, k-means, dead-code
threshold, quantizer dropout) and otherwise accepted only at the value that does nothing. HF's config has no
place for codeclm's training-only settings (EMA decay, k-means iterations, dead-code rule, quantizer dropout,
unit-norm init): `codec_config_to_hf` keeps them under the extra key `codeclm_training`, which transformers
stores and ignores, so ours -> HF -> ours gives back the same config.
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from safetensors.torch import save_file
from torch import Tensor
from transformers import EncodecConfig

from codec.codec import Codec, CodecConfig
from codec.files import CONFIG_FILE, WEIGHTS_FILE
from codec.conv import PAD_MODES, StreamableConvTranspose1d
from codec.rvq import QuantizerConfig
from codec.seanet import SEANetConfig
from interop.state import SAFETENSORS_FILE, ConversionError, check_state, read_weights, rename

TRAINING_KEY = "codeclm_training"
TRAINING_ONLY = {
    "seanet": ("unit_norm_init",),
    "quantizer": ("codebook_dim", "ema_decay", "kmeans_iters", "dead_code_threshold", "dead_code_mode", "dropout"),
}
# Weight norm: torch's legacy `weight_g` / `weight_v` (the encodec package, AudioCraft, older HF files) are the
# `original0` / `original1` of today's parametrization, same shapes.
CONV_PARAMETER = r"(bias|weight_g|weight_v|parametrizations\.weight\.original[01])"
WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
LSTM_PARAMETER = r"((?:weight|bias)_(?:ih|hh)_l\d+)"
# Reference EuclideanCodebook buffer -> ours (HF, AudioCraft and the encodec package share these names).
CODEBOOK_NAMES = {"embed": "codebook", "embed_avg": "code_sum", "cluster_size": "usage", "inited": "initialized"}
REFERENCE_CODEBOOK_NAMES = {ours: reference for reference, ours in CODEBOOK_NAMES.items()}


def _require(ok: bool, source: str, option: str, value: Any, supported: str) -> None:
    if not ok:
        raise ConversionError(f"{source}: {option}={value!r} is not supported ({supported})")


def meta_codec(config: CodecConfig, source: str) -> Codec:
    """The module converted weights must fill, built on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            return Codec(config)
    except ValueError as error:
        raise ConversionError(f"{source}: {error}") from error


def _weight_norm_name(name: str) -> str:
    return WEIGHT_NORM_NAMES.get(name, name)


def _initialized_to_bool(state: dict[str, Tensor], source: str) -> None:
    """Reference `inited` is a float tensor [1]; ours is a bool scalar."""
    for name in [name for name in state if name.endswith(".initialized")]:
        flag = state[name]
        if flag.numel() != 1:
            raise ConversionError(f"{source}: {name} must hold one value, got shape {tuple(flag.shape)}")
        state[name] = flag.reshape(()).bool()


def write_codec(config: CodecConfig, state: Mapping[str, Tensor], directory: Path) -> None:
    """The Codec.save layout (config.json + model.safetensors), written from a state dict without building the
    model. `state` must fill Codec(config) (the converters check it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, directory / WEIGHTS_FILE)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: not valid JSON ({error})") from error


# ---- HF transformers EncodecModel ----------------------------------------------------------------------------


def _check_hf_bandwidths(config: CodecConfig, codec: Codec, source: str) -> None:
    """HF takes its number of codebooks from target_bandwidths[-1] and the depth at each bandwidth with its own
    rounding (frame rate rounded up, EncodecConfig.frame_rate): refuse a config where HF and ours would disagree."""
    if not config.bandwidths:
        raise ConversionError(f"{source}: bandwidths is empty; HF needs at least one target bandwidth")
    hf_frame_rate = math.ceil(config.sample_rate / config.seanet.hop_length)
    bits = math.log2(config.quantizer.codebook_size)
    hf_num_codebooks = int(1000 * config.bandwidths[-1] // (hf_frame_rate * math.ceil(bits)))
    if hf_num_codebooks != config.quantizer.num_codebooks:
        raise ConversionError(f"{source}: target_bandwidths={list(config.bandwidths)} gives HF {hf_num_codebooks} "
                              f"codebooks (from the last one), the codec has {config.quantizer.num_codebooks}")
    for kbps in config.bandwidths:
        hf_depth = min(max(1, math.floor(kbps * 1000 / (bits * hf_frame_rate))), hf_num_codebooks)
        if hf_depth != codec.bandwidth_to_num_codebooks(kbps):
            raise ConversionError(f"{source}: at {kbps} kbps HF uses {hf_depth} codebooks, codeclm "
                                  f"{codec.bandwidth_to_num_codebooks(kbps)}")


def _training_settings(hf_config: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    settings = {part: dict(values) for part, values in (hf_config.get(TRAINING_KEY) or {}).items()}
    unknown = [f"{part}.{name}" for part, values in settings.items() for name in values
               if name not in TRAINING_ONLY.get(part, ())]
    if unknown:
        raise ConversionError(f"{source}: {TRAINING_KEY} holds {unknown}; it may only hold the training-only "
                              f"settings {TRAINING_ONLY}")
    return {part: settings.get(part, {}) for part in TRAINING_ONLY}


def codec_config_from_hf(hf_config: Mapping[str, Any], source: str) -> CodecConfig:
    """An HF `EncodecConfig` (config.json, or MusicGen's `audio_encoder` sub-config) -> CodecConfig.

    Missing keys take EncodecConfig's defaults. Refused: normalize=True (HF rescales the input by its RMS),
    norm_type other than weight_norm, codebook_dim != hidden_size, trim_right_ratio != 1, chunk_length_s set
    (HF then encodes overlapping chunks; Codec.encode takes the whole signal), pad_mode outside constant /
    reflect / replicate, and target_bandwidths that HF and codeclm would turn into different codebook counts.
    HF's activation is always ELU, its shortcut `use_conv_shortcut` = not our `true_skip`.
    """
    if hf_config.get("model_type", "encodec") != "encodec":
        raise ConversionError(f"{source}: model_type={hf_config['model_type']!r}, expected 'encodec'")
    training = _training_settings(hf_config, source)
    try:
        hf = EncodecConfig.from_dict({name: value for name, value in hf_config.items() if name != TRAINING_KEY})
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{source}: not a valid EncodecConfig ({error})") from error
    _require(not hf.normalize, source, "normalize", hf.normalize, "codeclm does not rescale the input: False")
    _require(hf.norm_type == "weight_norm", source, "norm_type", hf.norm_type, "codeclm has weight_norm")
    _require(hf.codebook_dim == hf.hidden_size, source, "codebook_dim", hf.codebook_dim,
             f"codeclm's EMA codebooks have the latent width, hidden_size={hf.hidden_size}")
    _require(hf.trim_right_ratio == 1.0, source, "trim_right_ratio", hf.trim_right_ratio,
             "codeclm's causal transposed convs trim all on the right: 1.0")
    _require(hf.chunk_length_s is None, source, "chunk_length_s", hf.chunk_length_s,
             "codeclm encodes the whole signal, without overlapping chunks: None")
    _require(hf.pad_mode in PAD_MODES, source, "pad_mode", hf.pad_mode, f"codeclm has {PAD_MODES}")
    _require(hf.num_quantizers >= 1, source, "target_bandwidths", hf.target_bandwidths,
             "the last bandwidth must pay for at least one codebook")
    try:
        config = CodecConfig(
            sample_rate=hf.sampling_rate,
            channels=hf.audio_channels,
            seanet=SEANetConfig(
                dimension=hf.hidden_size,
                n_filters=hf.num_filters,
                ratios=tuple(hf.upsampling_ratios),
                n_residual_layers=hf.num_residual_layers,
                dilation_base=hf.dilation_growth_rate,
                kernel_size=hf.kernel_size,
                last_kernel_size=hf.last_kernel_size,
                residual_kernel_size=hf.residual_kernel_size,
                compress=hf.compress,
                lstm_layers=hf.num_lstm_layers,
                activation="elu",
                causal=hf.use_causal_conv,
                pad_mode=hf.pad_mode,
                true_skip=not hf.use_conv_shortcut,
                final_tanh=False,
                **training["seanet"],
            ),
            quantizer=QuantizerConfig(num_codebooks=hf.num_quantizers, codebook_size=hf.codebook_size, lookup="ema",
                                      **training["quantizer"]),
            bandwidths=tuple(hf.target_bandwidths),
        )
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{source}: {error}") from error
    _check_hf_bandwidths(config, meta_codec(config, source), source)
    return config


def codec_config_to_hf(config: CodecConfig) -> dict[str, Any]:
    """CodecConfig -> an HF EncodecConfig dict (with model_type, as MusicgenConfig's `audio_encoder` takes it).

    Refused, as HF's EncodecModel cannot express them: the iSTFT decoder, activation other than ELU, final_tanh, no
    LSTM (lstm_layers=0), a decoder that does not mirror the encoder (decoder_n_filters, encoder_last_kernel_size),
    DAC's padding convention, the factorized (DAC) lookup, a codebook size that is not a power of 2, and bandwidths HF
    would turn into another number of codebooks. Training-only settings go under `codeclm_training`.
    """
    source = "codeclm codec config"
    seanet, quantizer = config.seanet, config.quantizer
    _require(seanet.activation == "elu", source, "seanet.activation", seanet.activation, "HF EnCodec uses ELU")
    _require(not seanet.final_tanh, source, "seanet.final_tanh", seanet.final_tanh, "HF EnCodec has no output tanh")
    _require(seanet.lstm_layers >= 1, source, "seanet.lstm_layers", seanet.lstm_layers,
             "HF EnCodec always has an LSTM: >= 1")
    for option in ("decoder_n_filters", "encoder_last_kernel_size"):
        _require(getattr(seanet, option) is None, source, f"seanet.{option}", getattr(seanet, option),
                 "HF EnCodec's decoder mirrors its encoder: null")
    _require(seanet.padding_convention == "encodec", source, "seanet.padding_convention", seanet.padding_convention,
             "HF EnCodec pads as EnCodec: encodec")
    _require(config.decoder.kind == "seanet", source, "decoder.kind", config.decoder.kind,
             "HF EnCodec's decoder is SEANet: seanet")
    _require(quantizer.lookup == "ema", source, "quantizer.lookup", quantizer.lookup,
             "HF EnCodec has Euclidean EMA codebooks: ema")
    card = quantizer.codebook_size
    _require(card & (card - 1) == 0, source, "quantizer.codebook_size", card, "HF EnCodec needs a power of 2")
    _check_hf_bandwidths(config, meta_codec(config, source), source)
    hf_config = EncodecConfig(
        target_bandwidths=list(config.bandwidths),
        sampling_rate=config.sample_rate,
        audio_channels=config.channels,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
        hidden_size=seanet.dimension,
        num_filters=seanet.n_filters,
        num_residual_layers=seanet.n_residual_layers,
        upsampling_ratios=list(seanet.ratios),
        norm_type="weight_norm",
        kernel_size=seanet.kernel_size,
        last_kernel_size=seanet.last_kernel_size,
        residual_kernel_size=seanet.residual_kernel_size,
        dilation_growth_rate=seanet.dilation_base,
        use_causal_conv=seanet.causal,
        pad_mode=seanet.pad_mode,
        compress=seanet.compress,
        num_lstm_layers=seanet.lstm_layers,
        trim_right_ratio=1.0,
        codebook_size=card,
        codebook_dim=seanet.dimension,
        use_conv_shortcut=not seanet.true_skip,
        **{TRAINING_KEY: {part: {name: getattr(getattr(config, part), name) for name in names}
                          for part, names in TRAINING_ONLY.items()}},
    )
    return hf_config.to_diff_dict()


def codec_state_from_hf(weights: Mapping[str, Tensor], config: CodecConfig, prefix: str, source: str
                        ) -> dict[str, Tensor]:
    """HF EncodecModel weights (the keys under `prefix`, e.g. "audio_encoder." in a MusicGen file; the other keys
    are left to the caller) -> a state dict that fills Codec(config) exactly.

    Names match ours but for the decoder's transposed convs (`decoder.layers.N.conv.*` in HF, `.convtr.*` here)
    and the codebook buffers; legacy `weight_g` / `weight_v` names are accepted.
    """
    codec = meta_codec(config, source)
    transposed = {index for index, layer in enumerate(codec.decoder.layers)
                  if isinstance(layer, StreamableConvTranspose1d)}
    escaped = re.escape(prefix)

    def conv_name(match: re.Match) -> str:
        part, index, inner, parameter = match.groups()
        kind = "convtr" if part == "decoder" and not inner and int(index) in transposed else "conv"
        return f"{part}.layers.{index}.{inner}{kind}.{_weight_norm_name(parameter)}"

    rules = [
        (rf"{escaped}(encoder|decoder)\.layers\.(\d+)\.((?:block\.\d+\.|shortcut\.)?)conv\.{CONV_PARAMETER}",
         conv_name),
        (rf"{escaped}(encoder|decoder)\.layers\.(\d+)\.lstm\.{LSTM_PARAMETER}", r"\1.layers.\2.lstm.\3"),
        (rf"{escaped}quantizer\.layers\.(\d+)\.codebook\.(embed|embed_avg|cluster_size|inited)",
         lambda match: f"quantizer.codebooks.{match[1]}.{CODEBOOK_NAMES[match[2]]}"),
    ]
    if prefix:
        rules.append((rf"(?!{escaped}).*", ""))
    state = rename(weights, rules, source)
    _initialized_to_bool(state, source)
    check_state(state, codec, source)
    return state


def codec_state_to_hf(state: Mapping[str, Tensor], config: CodecConfig, prefix: str) -> dict[str, Tensor]:
    """A Codec(config) state dict -> HF EncodecModel names (each under `prefix`), the inverse of
    codec_state_from_hf (`initialized` becomes HF's float [1] `inited`)."""
    source = "codeclm codec weights"
    check_state(state, meta_codec(config, source), source)
    rules = [
        (rf"(encoder|decoder)\.layers\.(\d+)\.((?:block\.\d+\.|shortcut\.)?)(?:conv|convtr)\.{CONV_PARAMETER}",
         lambda match: f"{prefix}{match[1]}.layers.{match[2]}.{match[3]}conv.{match[4]}"),
        (rf"(encoder|decoder)\.layers\.(\d+)\.lstm\.{LSTM_PARAMETER}",
         lambda match: f"{prefix}{match[1]}.layers.{match[2]}.lstm.{match[3]}"),
        (r"quantizer\.codebooks\.(\d+)\.(codebook|code_sum|usage|initialized)",
         lambda match: f"{prefix}quantizer.layers.{match[1]}.codebook.{REFERENCE_CODEBOOK_NAMES[match[2]]}"),
    ]
    hf_state = rename(state, rules, source)
    for name in [name for name in hf_state if name.endswith(".inited")]:
        hf_state[name] = hf_state[name].reshape(1).float()
    return hf_state


def convert_hf_encodec(src_dir: Path, out_dir: Path) -> None:
    """An HF EncodecModel directory (config.json + safetensors or pytorch_model.bin) -> a Codec directory."""
    hf_config = _read_json(src_dir / "config.json")
    config = codec_config_from_hf(hf_config, str(src_dir))
    write_codec(config, codec_state_from_hf(read_weights(src_dir), config, prefix="", source=str(src_dir)), out_dir)


def codec_to_hf(codec_dir: Path, out_dir: Path) -> None:
    """A Codec directory (Codec.save) -> a directory `transformers.EncodecModel.from_pretrained` loads."""
    try:
        config = CodecConfig(**_read_json(codec_dir / CONFIG_FILE))
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{codec_dir / CONFIG_FILE}: not a codec config ({error})") from error
    hf_config = codec_config_to_hf(config)
    state = codec_state_to_hf(dict(read_weights(codec_dir).items()), config, prefix="")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, out_dir / SAFETENSORS_FILE,
              metadata={"format": "pt"})


# ---- AudioCraft `compression_state_dict.bin` and the `encodec` package ------------------------------------------

# xp.cfg options per section: required (they shape the model) and optional (AudioCraft's class defaults apply).
ENCODEC_OPTIONS = ({"autoencoder", "quantizer"}, {"sample_rate", "channels", "causal", "renormalize", "renorm"})
SEANET_OPTIONS = (
    {"dimension", "n_filters", "n_residual_layers", "ratios", "activation", "norm", "kernel_size",
     "residual_kernel_size", "last_kernel_size", "dilation_base", "pad_mode", "true_skip", "compress", "lstm",
     "causal"},
    {"channels", "activation_params", "norm_params", "disable_norm_outer_blocks", "encoder", "decoder"},
)
SEANET_DECODER_OPTIONS = {"trim_right_ratio", "final_activation", "final_activation_params"}
RVQ_OPTIONS = (
    {"n_q", "bins"},
    {"q_dropout", "decay", "kmeans_init", "kmeans_iters", "threshold_ema_dead_code", "orthogonal_reg_weight",
     "orthogonal_reg_active_codes_only", "orthogonal_reg_max_codes"},
)


def _xp_value(xp_cfg: Mapping[str, Any], key: str, source: str) -> Any:
    """xp_cfg[key] as plain Python, OmegaConf interpolations (`${sample_rate}`) resolved."""
    if key not in xp_cfg:
        raise ConversionError(f"{source}: xp.cfg has no '{key}'")
    value = xp_cfg[key]
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except Exception as error:  # noqa: BLE001 - OmegaConf raises several kinds on a broken interpolation
            raise ConversionError(f"{source}: xp.cfg '{key}' does not resolve ({error})") from error
    return value


def _section(xp_cfg: Mapping[str, Any], key: str, options: tuple[set[str], set[str]], source: str
             ) -> dict[str, Any]:
    """An xp.cfg section as a dict, refused when a required option is missing or an option is unknown (it could
    change the model in a way codeclm cannot tell)."""
    section = _xp_value(xp_cfg, key, source)
    if not isinstance(section, Mapping):
        raise ConversionError(f"{source}: xp.cfg '{key}' must be a mapping, got {section!r}")
    required, optional = options
    missing, unknown = sorted(required - set(section)), sorted(set(section) - required - optional)
    if missing:
        raise ConversionError(f"{source}: xp.cfg '{key}' lacks {missing}")
    if unknown:
        raise ConversionError(f"{source}: xp.cfg '{key}' has options codeclm does not know: {unknown}")
    return dict(section)


def codec_config_from_audiocraft(xp_cfg: Mapping[str, Any], source: str) -> CodecConfig:
    """AudioCraft's training config (`xp.cfg` of compression_state_dict.bin, a DictConfig or a resolved dict):
    `sample_rate`, `channels`, `encodec`, `seanet`, `rvq` -> CodecConfig.

    Refused (they change what the model computes): renormalize=True, autoencoder other than seanet, quantizer
    other than rvq, norm other than weight_norm, norm_params, disable_norm_outer_blocks != 0, activation other
    than ELU(alpha=1), final activation other than none or Tanh, trim_right_ratio != 1, encoder- or
    decoder-only overrides of shared SEANet options, orthogonal_reg_weight != 0 (a training loss codeclm lacks),
    and unknown options. Training-only options are mapped: decay -> ema_decay, kmeans_init / kmeans_iters ->
    kmeans_iters (0 when off), threshold_ema_dead_code -> dead_code_threshold (count), q_dropout -> dropout 1.0
    (AudioCraft draws one depth per batch, codeclm one per item). bandwidths is the full-depth bitrate.
    """
    compression_model = xp_cfg.get("compression_model", "encodec")
    _require(compression_model == "encodec", source, "compression_model", compression_model, "codeclm has encodec")
    encodec = _section(xp_cfg, "encodec", ENCODEC_OPTIONS, source)
    seanet = _section(xp_cfg, "seanet", SEANET_OPTIONS, source)
    rvq = _section(xp_cfg, "rvq", RVQ_OPTIONS, source)
    _require(encodec["autoencoder"] == "seanet", source, "encodec.autoencoder", encodec["autoencoder"],
             "codeclm has seanet")
    _require(encodec["quantizer"] == "rvq", source, "encodec.quantizer", encodec["quantizer"], "codeclm has rvq")
    renormalize = encodec.get("renormalize", False)
    _require(not renormalize, source, "encodec.renormalize", renormalize, "codeclm does not rescale the input")
    _require(seanet["norm"] == "weight_norm", source, "seanet.norm", seanet["norm"], "codeclm has weight_norm")
    for option, default in (("norm_params", {}), ("disable_norm_outer_blocks", 0), ("encoder", {})):
        value = seanet.get(option, default)
        _require(value == default, source, f"seanet.{option}", value, f"codeclm has {default!r}")
    activation = (seanet["activation"], {"alpha": 1.0, **seanet.get("activation_params", {})})
    _require(activation == ("ELU", {"alpha": 1.0}), source, "seanet.activation, activation_params", activation,
             "codeclm has ELU with alpha 1")
    decoder = dict(seanet.get("decoder") or {})
    unknown = sorted(set(decoder) - SEANET_DECODER_OPTIONS)
    _require(not unknown, source, "seanet.decoder", unknown, "codeclm has no decoder-only SEANet options")
    trim_right_ratio = decoder.get("trim_right_ratio", 1.0)
    _require(trim_right_ratio == 1.0, source, "seanet.decoder.trim_right_ratio", trim_right_ratio,
             "codeclm's causal transposed convs trim all on the right: 1.0")
    final_activation = (decoder.get("final_activation"), decoder.get("final_activation_params") or {})
    _require(final_activation in ((None, {}), ("Tanh", {})), source,
             "seanet.decoder.final_activation, final_activation_params", final_activation, "codeclm has none or Tanh")
    _require(seanet["pad_mode"] in PAD_MODES, source, "seanet.pad_mode", seanet["pad_mode"], f"codeclm has {PAD_MODES}")
    orthogonal_reg_weight = rvq.get("orthogonal_reg_weight", 0.0)
    _require(orthogonal_reg_weight == 0.0, source, "rvq.orthogonal_reg_weight", orthogonal_reg_weight,
             "codeclm has no orthogonal codebook loss: 0")
    sample_rate = _xp_value(xp_cfg, "sample_rate", source)
    try:
        seanet_config = SEANetConfig(
            dimension=seanet["dimension"],
            n_filters=seanet["n_filters"],
            ratios=tuple(seanet["ratios"]),
            n_residual_layers=seanet["n_residual_layers"],
            dilation_base=seanet["dilation_base"],
            kernel_size=seanet["kernel_size"],
            last_kernel_size=seanet["last_kernel_size"],
            residual_kernel_size=seanet["residual_kernel_size"],
            compress=seanet["compress"],
            lstm_layers=seanet["lstm"],
            activation="elu",
            causal=seanet["causal"],
            pad_mode=seanet["pad_mode"],
            true_skip=seanet["true_skip"],
            final_tanh=final_activation[0] == "Tanh",
        )
        kbps_per_codebook = sample_rate / seanet_config.hop_length * math.log2(rvq["bins"]) / 1000
        config = CodecConfig(
            sample_rate=sample_rate,
            channels=_xp_value(xp_cfg, "channels", source),
            seanet=seanet_config,
            quantizer=QuantizerConfig(
                num_codebooks=rvq["n_q"],
                codebook_size=rvq["bins"],
                lookup="ema",
                ema_decay=rvq.get("decay", 0.99),
                kmeans_iters=rvq.get("kmeans_iters", 10) if rvq.get("kmeans_init", True) else 0,
                dead_code_threshold=float(rvq.get("threshold_ema_dead_code", 2.0)),
                dead_code_mode="count",
                dropout=1.0 if rvq.get("q_dropout", False) else 0.0,
            ),
            bandwidths=(rvq["n_q"] * kbps_per_codebook,),
        )
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{source}: {error}") from error
    meta_codec(config, source)
    return config


def codec_state_from_audiocraft(best_state: Mapping[str, Tensor], config: CodecConfig, source: str
                                ) -> dict[str, Tensor]:
    """AudioCraft's `best_state` (or the `encodec` package's state_dict, same layout) -> a state dict that fills
    Codec(config): `{encoder,decoder}.model.N` -> `.layers.N`, `conv.conv` -> `conv`, `convtr.convtr` -> `convtr`,
    weight_g / weight_v -> weight-norm parametrization, `quantizer.vq.layers.i._codebook.*` -> our codebooks."""
    rules = [
        (rf"(encoder|decoder)\.model\.(\d+)\.((?:block\.\d+\.|shortcut\.)?)(conv|convtr)\.\4\.{CONV_PARAMETER}",
         lambda match: f"{match[1]}.layers.{match[2]}.{match[3]}{match[4]}.{_weight_norm_name(match[5])}"),
        (rf"(encoder|decoder)\.model\.(\d+)\.lstm\.{LSTM_PARAMETER}", r"\1.layers.\2.lstm.\3"),
        (r"quantizer\.vq\.layers\.(\d+)\._codebook\.(embed|embed_avg|cluster_size|inited)",
         lambda match: f"quantizer.codebooks.{match[1]}.{CODEBOOK_NAMES[match[2]]}"),
    ]
    state = rename(best_state, rules, source)
    _initialized_to_bool(state, source)
    check_state(state, meta_codec(config, source), source)
    return state
