"""The language model over codec tokens: codes -> pattern sequence -> transformer -> logits -> sampled codes.

Notation used for tensor shapes throughout `lm/`:

    B     batch
    K     codebooks (parallel token streams per frame)
    T     frames (codec time steps)
    S     pattern steps (positions of the interleaved sequence the transformer runs over)
    D     model width
    H     attention heads
    L     condition length (cross-attention memory)
    P     prepended condition steps
    card  codebook size (tokens per codebook; the special token is `card`)

Files, in data-flow order: patterns.py (codes [B, K, T] <-> sequence [B, K, S]), kv_cache.py, attention.py,
transformer.py, lm.py (LMConfig, LMModel), sampling.py, generator.py (the decode loop, CFG, long-form windows).
They are the reference path: eager, SDPA, a plain KV cache. backends/ makes faster copies of a model for decoding
(int8 or fp16 weights, torch.compile, an int8 KV cache), swapping modules on the copy from outside.
lora.py adds LoRA adapters (through PEFT) to an LM for fine-tuning, saves, loads and merges them.
Speech: multirate.py (multi-scale codes, one length per level <-> one stream in Orpheus order), tts_format.py
(text + codes in one vocabulary: [SOH] text [EOT] [EOH] [SOS] audio [EOS], docs/tts_format.md), tts_lm.py (the
decoder-only TTS LM over that vocabulary), tts_generator.py (its decode loop, docs/tts_lm.md).
"""
