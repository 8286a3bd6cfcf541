# %% [markdown]
# # Inside a pretrained MusicGen
#
# A converted checkpoint (docs/interop.md) opened like any export: which codes each codebook uses, how much each
# step of a generation reads each word of the caption, and how sure the model is of each codebook along the way.
#
# Set `CODECLM_CHECKPOINT` to a converted folder (`python -m interop.convert pretrained/musicgen-small --out
# pretrained/musicgen-small-codeclm`) to look at a real model. Unset, the notebook builds a tiny random HF MusicGen
# (`interop/tiny.py`) and converts it, which is what CI runs: the plots are then of noise, the checks still hold.

# %%
import json, math, os, sys, tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from _setup import RESULTS  # puts the repository on sys.path, imports builders

# builders selected matplotlib's file-only Agg backend: back to the notebook's, so that figures show below cells
# %matplotlib inline
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is faster than many threads fighting over a shared CPU

# %%
from conditioners.attributes import ConditioningAttributes
from interop.convert import convert
from interop.tiny import tiny_hf_musicgen
from lm.generator import GenerationConfig
from pipeline import GenerationPipeline

checkpoint = os.environ.get("CODECLM_CHECKPOINT")
if checkpoint is None:
    scratch = Path(tempfile.mkdtemp())
    tiny_hf_musicgen(scratch / "hf")
    convert(scratch / "hf", scratch / "converted")
    checkpoint = scratch / "converted"
pipeline = GenerationPipeline.load(checkpoint, generation=GenerationConfig(temperature=1.0, top_k=0, cfg_coef=3.0))
lm, pattern, conditioner, codec = pipeline.lm, pipeline.pattern, pipeline.conditioner, pipeline.codec
K, card = lm.config.num_codebooks, lm.config.card
print(pipeline.export_config.get("converted_from", "trained with codeclm"))
print(f"LM {sum(p.numel() for p in lm.parameters()) / 1e6:.1f} M parameters, {K} x {card} codes at "
      f"{codec.frame_rate:g} Hz; cross_attention_mask={lm.config.cross_attention_mask}")

# %% [markdown]
# ## A generation, and what the model thought at every step
# We sample 2 seconds for two captions through the generation pipeline (the full distribution at temperature 1,
# CFG 3, a seed per caption), then run the generated sequence through the model once more, teacher-forced: the
# logits at each step are the conditional distributions the sampler drew from (before guidance), so their entropy
# shows where the model hesitates.

# %%
captions = ["a calm piano melody in a minor", "upbeat drums and bass"]
output = pipeline.generate(captions, duration=2.0, seeds=[0, 1])
codes, audio = output.codes, output.audio  # [B, K, T], [B, C, samples]
frames = codes.shape[-1]
with torch.no_grad():
    conditions = conditioner([ConditioningAttributes(text={"description": text}) for text in captions])
    sequence = pattern.get_pattern(frames).build(codes, special_token=card)  # [B, K, S]
    logits, valid = pattern.get_pattern(frames).revert_logits(lm(sequence, conditions))  # [B, K, T, card]
entropy_bits = -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1) / math.log(2)  # [B, K, T]
figure, axis = plt.subplots(figsize=(9, 3))
for k in range(K):
    axis.plot(entropy_bits[0, k], label=f"codebook {k}")
axis.axhline(math.log2(card), color="gray", linestyle=":", label="uniform")
axis.set_xlabel("frame"); axis.set_ylabel("entropy (bits)"); axis.legend(fontsize=8); plt.show()
print("mean entropy per codebook (bits):", [round(value, 2) for value in entropy_bits.mean(dim=(0, 2)).tolist()])

# %% [markdown]
# ## Codebook usage
# How many of the `card` codes each codebook used in this generation, and the usage entropy (log2 card = all codes
# equally often). The first codebook carries the coarse structure; later ones refine the residual.

# %%
counts = torch.stack([torch.bincount(codes[:, k].flatten(), minlength=card) for k in range(K)]).float()  # [K, card]
usage = counts / counts.sum(dim=1, keepdim=True)
usage_entropy_bits = [-(row[row > 0] * row[row > 0].log2()).sum().item() for row in usage]
figure, axes = plt.subplots(1, K, figsize=(3 * K, 2.5), sharey=True)
for k, axis in enumerate(axes):
    axis.bar(range(card), counts[k], width=1.0)
    axis.set_title(f"codebook {k}: {int((counts[k] > 0).sum())} codes, {usage_entropy_bits[k]:.1f} bits", fontsize=8)
plt.show()

# %% [markdown]
# ## Attention to the text
# Hooks keep each cross-attention module's input; the weights are softmax(q k^T / sqrt(d)) from the layer's own
# `query` and the projected memory (`CrossMemory`, with its padding mask when `cross_attention_mask` is on). Each
# row sums to 1; padded positions of the shorter caption get nothing when the mask is on.

# %%
from einops import rearrange

captured = {}
handles = [layer.cross_attention.register_forward_hook(
    lambda module, args, output, index=index: captured.__setitem__(index, args))
    for index, layer in enumerate(lm.transformer.layers)]
with torch.no_grad():
    lm(sequence, conditions)
for handle in handles:
    handle.remove()


def cross_attention_weights(attention, x, memory):
    """x [B, N, D], memory keys [B, H, L, D / H] -> weights [B, H, N, L]"""
    q = rearrange(attention.query(x), "b n (h d) -> b h n d", h=attention.num_heads)
    scores = q @ memory.keys.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~memory.mask, float("-inf")).softmax(dim=-1)


with torch.no_grad():
    weights = [cross_attention_weights(layer.cross_attention, *captured[index])
               for index, layer in enumerate(lm.transformer.layers)]
per_token = torch.stack(weights).mean(dim=(0, 2, 3))  # [B, L]: mean over layers, heads and steps
tokenizer = conditioner.text["description"].tokenizer
figure, axes = plt.subplots(1, len(captions), figsize=(6 * len(captions), 2.5))
for index, (axis, caption) in enumerate(zip(axes, captions)):
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(caption)["input_ids"])
    axis.bar(range(per_token.shape[1]), per_token[index])
    axis.set_xticks(range(len(pieces)), pieces, rotation=90, fontsize=7); axis.set_title(caption, fontsize=9)
figure.tight_layout(); plt.show()
lengths = [len(tokenizer(caption)["input_ids"]) for caption in captions]
padding_mass = [per_token[index, length:].sum().item() for index, length in enumerate(lengths)]
print("attention mass on padding per caption:", padding_mass)

# %%
summary = {
    "python_prefix": sys.prefix,
    "codes_shape": list(codes.shape), "codes_in_range": bool(codes.min() >= 0 and codes.max() < card),
    "audio_samples": audio.shape[-1], "expected_samples": frames * codec.hop_length,
    "cardinality": card, "mean_entropy_bits": entropy_bits.mean(dim=(0, 2)).tolist(),
    "usage_entropy_bits": usage_entropy_bits,
    "cross_attention_row_sums": [row_sum for layer in weights for row_sum in layer.sum(-1).flatten().tolist()],
    "cross_attention_mask": lm.config.cross_attention_mask, "padding_mass": padding_mass,
    "padded_positions": [per_token.shape[1] - length for length in lengths],
}
(RESULTS / "pretrained_internals.json").write_text(json.dumps(summary, indent=1))
{key: value for key, value in summary.items() if key != "cross_attention_row_sums"}
