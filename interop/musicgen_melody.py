"""MusicGen-Melody: HF `MusicgenMelodyForConditionalGeneration` directories -> codeclm LM exports.

An HF directory holds config.json (model_type "musicgen_melody": `text_encoder` (T5), `audio_encoder` (EnCodec) and
`decoder` sub-configs, `num_chroma`, `chroma_length`), the weights under `text_encoder.`, `audio_encoder.`,
`decoder.`, `enc_to_dec_proj.` and `audio_enc_to_dec_proj.`, the T5 tokenizer files, and the feature extractor's
settings (preprocessor_config.json, or processor_config.json as `MusicgenMelodyProcessor.save_pretrained` writes it).

HF's semantics and the keys that give them here (configs/conditioner/musicgen_melody.yaml has each with its source):
the decoder has no cross-attention (`lm.model.cross_attention: false`); [the melody's chroma projected and repeated
to `chroma_length` frames, the T5 states projected and zeroed at padding] are prepended to the token embeddings,
unmasked (`fuser: {melody: prepend, description: prepend}`); the chroma is the feature extractor's (Gaussian
filterbank, normalized spectrogram, argmax one-hot, silence = class 0: `chroma.melody.*`). Without a melody HF feeds
one class-0 frame, which is what our conditioner makes of a missing melody (silence), and HF's CFG null is that
melody with zero text states (ConditionTensors.prepend_null). The decoder is MusicGen's without `encoder_attn`, so
the key map is interop.musicgen's `decoder_pieces` less the cross-attention rows, plus the chroma projection.
"""
from dataclasses import replace
from pathlib import Path

import torch
from transformers import MusicgenMelodyFeatureExtractor

from conditioners.chroma import NUM_PITCH_CLASSES
from interop.encodec import codec_config_from_hf, codec_state_from_hf
from interop.export import MELODY_PROJECTION, TEXT_ENCODER_DIR, LMExport, write_text_encoder
from interop.musicgen import check_codec_fits, decoder_pieces, lm_config_from_hf, read_composite_config, split_by_prefix
from interop.state import ConversionError, Piece, join_pieces, read_weights
from lm.lm import LMConfig

# Feature extractor options codeclm implements only at these values: name -> the value it must have.
REQUIRED_FEATURE_OPTIONS = {"feature_size": NUM_PITCH_CLASSES, "padding_value": 0.0}


def melody_decoder_pieces(config: LMConfig) -> list[Piece]:
    """HF decoder, text and chroma projection names -> our LM export names."""
    pieces = [piece for piece in decoder_pieces(config) if ".encoder_attn" not in piece.source]
    pieces += [Piece(f"audio_enc_to_dec_proj.{name}", f"{MELODY_PROJECTION}{name}") for name in ("weight", "bias")]
    return pieces


def melody_settings(config: dict, directory: Path) -> dict:
    """HF's chroma settings -> the keys of conditioner.chroma.melody that depend on the checkpoint."""
    source = str(directory)
    if config.get("num_chroma", NUM_PITCH_CLASSES) != NUM_PITCH_CLASSES:
        raise ConversionError(f"{source}: num_chroma={config['num_chroma']} is not supported (codeclm's chroma has "
                              f"{NUM_PITCH_CLASSES} pitch classes)")
    length = config.get("chroma_length", 235)  # HF MusicgenMelodyConfig's default
    if not isinstance(length, int) or length < 1:
        raise ConversionError(f"{source}: chroma_length must be a whole number of frames >= 1, got {length!r}")
    try:
        extractor = MusicgenMelodyFeatureExtractor.from_pretrained(directory, local_files_only=True)
    except OSError as error:
        raise ConversionError(f"{source}: no feature extractor settings (expected preprocessor_config.json, or "
                              f"processor_config.json with a `feature_extractor`, as the processor saves them)"
                              ) from error
    for option, required in REQUIRED_FEATURE_OPTIONS.items():
        if getattr(extractor, option) != required:
            raise ConversionError(f"{source}: feature extractor option {option}={getattr(extractor, option)!r} is not "
                                  f"supported (codeclm implements {option}={required!r})")
    return {"sample_rate": extractor.sampling_rate, "frame_rate": extractor.sampling_rate / extractor.hop_length,
            "n_fft": extractor.n_fft, "length": length, "max_duration": extractor.chunk_length}


def convert_hf_musicgen_melody(directory: Path, out: Path) -> None:
    """An HF MusicgenMelodyForConditionalGeneration directory -> an LM export in `out` (the caller's staging)."""
    source = str(directory)
    config = read_composite_config(directory, "MusicGen-Melody")
    lm_config = replace(lm_config_from_hf(config["decoder"], source), cross_attention=False)
    codec_config = codec_config_from_hf(config["audio_encoder"], source)
    check_codec_fits(lm_config, codec_config, source)
    melody = melody_settings(config, directory)
    weights = read_weights(directory)
    groups = split_by_prefix(weights, ("text_encoder.", "audio_encoder."), source)
    text_hidden = config["text_encoder"]["d_model"]
    lm_weights = groups[""]
    for projection, width in (("enc_to_dec_proj", text_hidden), ("audio_enc_to_dec_proj", NUM_PITCH_CLASSES)):
        if f"{projection}.weight" not in lm_weights and width == lm_config.dim:  # HF then projects nothing
            lm_weights = {**lm_weights, f"{projection}.weight": torch.eye(width),
                          f"{projection}.bias": torch.zeros(width)}
    export = LMExport(lm=lm_config, codec=codec_config, text_hidden_size=text_hidden, text_max_length=None,
                      converted_from=f"hf_musicgen_melody {source}", melody=melody)
    export.write(out, lm_state=join_pieces(lm_weights, melody_decoder_pieces(lm_config), source),
                 codec_state=codec_state_from_hf(groups["audio_encoder."], codec_config, prefix="", source=source))
    write_text_encoder(config["text_encoder"], groups["text_encoder."], directory, out / TEXT_ENCODER_DIR)
