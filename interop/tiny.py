"""Tiny random reference checkpoints, built offline: what the interop tests and notebooks/pretrained_internals
convert, so the converters run without downloading anything.

`tiny_hf_musicgen(directory)` writes what `MusicgenForConditionalGeneration.save_pretrained` and
`MusicgenProcessor`'s tokenizer write for facebook/musicgen-*, at toy sizes: a T5 encoder with a tokenizer trained
here (Unigram, as T5's SentencePiece model), a non-causal 32 kHz-style EnCodec, and a MusicGen decoder.
`tiny_hf_musicgen_melody(directory)` does the same for facebook/musicgen-melody, feature extractor included.
"""
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

CAPTIONS = [
    "a slow bach chorale played on church organ in g major",
    "a fast folk reel played on violin in d major",
    "calm piano in a minor with soft strings",
    "upbeat electronic dance track with heavy bass and drums",
    "brass section playing a march in b flat major",
    "ambient pads and a gentle flute melody",
]


def train_t5_tokenizer(vocab_size: int = 96):
    """A T5TokenizerFast (Unigram over Metaspace pieces, pad 0, eos 1, unk 2, as T5) trained on CAPTIONS."""
    from transformers import T5TokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tokenizer.train_from_iterator(CAPTIONS * 4, trainer=trainer)
    return T5TokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0)


def tiny_text_and_audio_configs(vocab_size: int):
    """(T5Config, EncodecConfig) of the tiny models: a 2-layer T5 of width 32, a 32 kHz-style non-causal EnCodec
    with identity shortcuts and 4 codebooks of 64 codes at 50 Hz."""
    from transformers import EncodecConfig, T5Config

    text = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(sampling_rate=32000, num_filters=4, upsampling_ratios=[8, 5, 4, 4], hidden_size=16,
                          codebook_size=64, target_bandwidths=[1.2], use_conv_shortcut=False, use_causal_conv=False,
                          num_lstm_layers=1, pad_mode="reflect")
    return text, audio


def spread_codebooks(audio_encoder: torch.nn.Module) -> None:
    """Random unit-scale codebooks, marked initialised, so that the codes are not degenerate."""
    for layer in audio_encoder.quantizer.layers:
        layer.codebook.embed.normal_()
        layer.codebook.inited.fill_(1.0)


def tiny_hf_musicgen(directory: Path, seed: int = 0, head_scale: float = 8.0) -> None:
    """Save a random MusicgenForConditionalGeneration (4 x 64 codes, width 48, 2 layers) and its tokenizer.

    head_scale multiplies the LM heads, so that greedy choices are not near-ties between random logits, and the
    cross-attention outputs, so that different captions give different tokens; the codebooks are spread out so
    that codes are not degenerate.
    """
    from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = train_t5_tokenizer()
    text, audio = tiny_text_and_audio_configs(len(tokenizer))
    decoder = MusicgenDecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, ffn_dim=96, pad_token_id=64, bos_token_id=64,
                                    decoder_start_token_id=64)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder))
    with torch.no_grad():
        for head in model.decoder.lm_heads:
            head.weight.mul_(head_scale)
        for layer in model.decoder.model.decoder.layers:  # so that the text visibly steers the tokens
            layer.encoder_attn.out_proj.weight.mul_(head_scale)
        spread_codebooks(model.audio_encoder)
    model.generation_config.decoder_start_token_id = 64
    model.generation_config.pad_token_id = 64
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def tiny_hf_musicgen_melody(directory: Path, seed: int = 0, head_scale: float = 8.0, chroma_length: int = 40
                            ) -> None:
    """Save a random MusicgenMelodyForConditionalGeneration (4 x 64 codes, width 48, 2 layers), its tokenizer and its
    feature extractor (the 32 kHz chroma settings of facebook/musicgen-melody), as `save_pretrained` and
    `MusicgenMelodyProcessor.save_pretrained` write them.

    head_scale multiplies the LM heads (no near-ties between random logits), both projections of the prepended
    conditions (the chroma's `audio_enc_to_dec_proj`, T5's `enc_to_dec_proj`) and the self-attention outputs, so
    that the melody and the caption each visibly change the greedy tokens. chroma_length is shorter than the
    released 235 frames, which would drown the caption's few positions in the near-uniform attention of a random
    model.
    """
    from transformers import (MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyFeatureExtractor,
                              MusicgenMelodyForConditionalGeneration, MusicgenMelodyProcessor)

    torch.manual_seed(seed)
    tokenizer = train_t5_tokenizer()
    text, audio = tiny_text_and_audio_configs(len(tokenizer))
    decoder = MusicgenMelodyDecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=48, num_hidden_layers=2,
                                          num_attention_heads=4, ffn_dim=96, pad_token_id=64, bos_token_id=64,
                                          decoder_start_token_id=64)
    config = MusicgenMelodyConfig(text_encoder=text, audio_encoder=audio, decoder=decoder, chroma_length=chroma_length)
    model = MusicgenMelodyForConditionalGeneration(config)
    with torch.no_grad():
        for head in model.decoder.lm_heads:
            head.weight.mul_(head_scale)
        model.audio_enc_to_dec_proj.weight.mul_(head_scale)
        model.enc_to_dec_proj.weight.mul_(head_scale)
        for layer in model.decoder.model.decoder.layers:  # the conditions reach the tokens through self-attention only
            layer.self_attn.out_proj.weight.mul_(head_scale)
        spread_codebooks(model.audio_encoder)
    model.generation_config.decoder_start_token_id = 64
    model.generation_config.pad_token_id = 64
    model.save_pretrained(directory)
    MusicgenMelodyProcessor(feature_extractor=MusicgenMelodyFeatureExtractor(), tokenizer=tokenizer).save_pretrained(
        directory)
