"""A TTS LM started from a local Hugging Face causal LM with its vocabulary extended (the VyvoTTS route).

The base model's token embedding (and its output head, tied or not) grows by the TTSFormat vocabulary V: TTS id i
is the base's id `base_vocab + i`, so every pretrained row stays where it was and the V new rows are drawn from
the old rows' mean and covariance (transformers' `resize_token_embeddings`). The logits returned are the V rows of
the TTS vocabulary only: the base's own tokens are never predicted. The TTS text is read through the new
character ids, not the base's tokenizer; what is inherited is the transformer itself.

Same interface as `lm.tts_lm.TTSLM` (forward, start_decoding / decode, embedding, freeze), so `TTSGenerator` and
`TTSLightningModule` run it unchanged. Decoding uses the base's own cache (transformers `DynamicCache`).
"""
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, PreTrainedModel

from lm.tts_lm import check_ids

HF_CONFIG_DIRECTORY = "hf_config"  # beside tts.safetensors in an export: the extended base's architecture


@dataclass
class HFDecodeState:
    """One incremental decoding: the base's cache and the positions it holds."""

    cache: DynamicCache
    capacity: int
    length: int = 0


class HFTTSLM(nn.Module):
    def __init__(self, base: PreTrainedModel, vocab_size: int, extend: bool = True):
        """base: a causal LM; extend: add `vocab_size` rows to its vocabulary (False: `base` is already extended,
        as when rebuilt from an export's saved config)."""
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        rows = base.get_input_embeddings().num_embeddings
        if extend:
            base.resize_token_embeddings(rows + vocab_size)
            rows += vocab_size
        self.base_vocab, self.vocab_size = rows - vocab_size, vocab_size
        if self.base_vocab < 0:
            raise ValueError(f"the base's vocabulary of {rows} rows cannot hold the TTS vocabulary of {vocab_size}")
        self.base = base

    @classmethod
    def from_pretrained(cls, directory: str | Path, vocab_size: int) -> "HFTTSLM":
        """A local transformers causal-LM directory (config.json + weights), loaded in fp32 and extended."""
        if not (Path(directory) / "config.json").is_file():
            raise FileNotFoundError(f"tts.hf_base={directory} holds no config.json: give a local Hugging Face causal "
                                    f"LM directory (save_pretrained's output)")
        base = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        return cls(base.train(), vocab_size)  # from_pretrained returns eval mode; a new model trains (dropout on)

    @classmethod
    def from_export(cls, directory: str | Path, vocab_size: int) -> "HFTTSLM":
        """The extended architecture saved by `save_config`, randomly initialised (load the weights after)."""
        config = AutoConfig.from_pretrained(Path(directory) / HF_CONFIG_DIRECTORY)
        return cls(AutoModelForCausalLM.from_config(config, dtype=torch.float32), vocab_size, extend=False)

    def save_config(self, directory: str | Path) -> None:
        self.base.config.save_pretrained(Path(directory) / HF_CONFIG_DIRECTORY)

    @property
    def embedding(self) -> nn.Embedding:
        return self.base.get_input_embeddings()

    def freeze(self, layers: int, embeddings: bool) -> None:
        """Stop training the first `layers` decoder layers (the base's `base_model.layers`) and, with `embeddings`,
        the token embedding."""
        blocks = getattr(self.base.base_model, "layers", None)
        if blocks is None and layers:
            raise ValueError(f"freeze_layers={layers}: the base {type(self.base).__name__} has no base_model.layers")
        if layers > (0 if blocks is None else len(blocks)):
            raise ValueError(f"freeze_layers={layers} but the base has {len(blocks)} layers")
        if blocks is not None:
            blocks[:layers].requires_grad_(False)
        if embeddings:
            self.embedding.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] (right-padded, TTS ids) -> logits [B, L, V] over the TTS vocabulary."""
        check_ids(ids, self.vocab_size)
        logits = self.base(input_ids=ids + self.base_vocab, use_cache=False).logits  # [B, L, base_vocab + V]
        return logits[..., self.base_vocab:]

    def start_decoding(self, batch_size: int, capacity: int) -> HFDecodeState:
        """A fresh cache for `capacity` positions (batch_size is set by the first `decode`)."""
        return HFDecodeState(cache=DynamicCache(config=self.base.config), capacity=capacity)

    def decode(self, ids: torch.Tensor, state: HFDecodeState) -> torch.Tensor:
        """ids [B, N] (the next N positions) -> logits [B, N, V], appending the positions to the cache."""
        check_ids(ids, self.vocab_size)
        N = ids.shape[1]
        if state.length + N > state.capacity:
            raise ValueError(f"KV cache capacity {state.capacity} exceeded: {state.length} filled + {N} new")
        logits = self.base(input_ids=ids + self.base_vocab, cache=state.cache, use_cache=True).logits
        state.length += N
        return logits[..., self.base_vocab:]  # [B, N, V]
