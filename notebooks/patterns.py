# %% [markdown]
# # Codebook patterns: how K parallel code streams become one sequence
#
# The LM runs over one sequence of steps; a pattern (`lm/patterns.py`) says which (frame, codebook) places each
# step holds. Every other place holds the special token S. Below: each pattern of `lm.pattern.kind` drawn for
# K=4 codebooks and T=6 frames, then how the generator handles the delay pattern's tail.

# %%
import json, sys

import matplotlib.pyplot as plt
import torch
from _setup import RESULTS, load_config  # puts the repository on sys.path, imports builders

# builders selected matplotlib's file-only Agg backend: back to the notebook's, so that figures show below cells
# %matplotlib inline
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is faster than many threads fighting over a shared CPU

# %%
import numpy as np
from builders import build_pattern

KINDS = ["delay", "parallel", "unroll", "valle", "musiclm"]
T = 6
patterns = {kind: build_pattern(load_config(["codec=tiny", f"lm.pattern.kind={kind}"])).get_pattern(T)
            for kind in KINDS}
K = patterns["delay"].num_codebooks


def draw(axis, image: np.ndarray, labels: np.ndarray, title: str) -> None:
    """image [K, S] colour values (NaN = grey), labels [K, S] text in each cell."""
    axis.imshow(np.ma.masked_invalid(image), cmap="viridis", vmin=0, vmax=T - 1, aspect="equal")
    axis.set_facecolor("0.85")
    for (q, s), label in np.ndenumerate(labels):
        axis.text(s, q, label, ha="center", va="center", fontsize=7)
    axis.set_xticks(range(image.shape[1])); axis.set_yticks(range(K))
    axis.set_xticks(np.arange(image.shape[1] + 1) - 0.5, minor=True)
    axis.set_yticks(np.arange(K + 1) - 0.5, minor=True)
    axis.grid(which="minor", color="white", linewidth=1)
    axis.tick_params(which="minor", length=0)
    axis.set_xlabel("sequence step s"); axis.set_ylabel("codebook q"); axis.set_title(title, fontsize=9)


# %% [markdown]
# ## The five layouts
# Colour = frame t, text = codebook letter + frame (`b3` is codebook 1 at frame 3), grey `S` = special token.
# Delay (MusicGen) shifts codebook q by q steps: S = T + K steps. Parallel emits a whole frame per step: T + 1.
# Unroll flattens every (frame, codebook): K T + 1. VALL-E first emits all of codebook 0, then the rest in
# parallel: 2T + 1. MusicLM flattens coarse codebooks (0, 1) for all frames first, then the fine ones: K T + 1.
# Step 0 is always empty: the model's first input is the special token.

# %%
layout_shapes, images = {}, {}
figure, axes = plt.subplots(len(KINDS), 1, figsize=(12, 2.0 * len(KINDS)))
for axis, kind in zip(axes, KINDS):
    index = patterns[kind].sequence_index.numpy()  # [K, S], T where the step holds S
    image = np.where(index < T, index, np.nan).astype(float)
    labels = np.array([[f"{'abcd'[q]}{t}" if t < T else "S" for t in row] for q, row in enumerate(index)])
    draw(axis, image, labels, f"{kind}: S = {index.shape[1]} steps")
    layout_shapes[kind] = list(index.shape)
    images[kind] = image
figure.tight_layout()
figure.savefig(RESULTS / "patterns.png", dpi=80)
plt.show()
print(layout_shapes)

# %% [markdown]
# Build and revert are one gather each, so `revert(build(codes)) == codes` for every pattern, and every
# (frame, codebook) place appears exactly once in the layout:

# %%
codes = torch.randint(0, 256, (2, K, T))
round_trip = {}
for kind, pattern in patterns.items():
    reverted, valid = pattern.revert(pattern.build(codes, special_token=256), special_token=256)
    placed = np.bincount(pattern.sequence_index.flatten().numpy(), minlength=T + 1)[:T]  # places per frame
    round_trip[kind] = bool(torch.equal(reverted, codes) and valid.all() and (placed == K).all())
round_trip

# %% [markdown]
# ## The delay pattern's tail at generation
# `LMGenerator` builds the window's sequence from codes that are all `UNKNOWN` (-1) except the prompt: the
# pattern writes the special token wherever it places nothing, so the places the loop must sample are exactly the
# `UNKNOWN` ones. At every step all K codebooks are sampled, but only `UNKNOWN` places are overwritten: at the
# last K-1 steps the lower codebooks sit in the tail (special tokens) and their samples are thrown away.
# Left: what is sampled (yellow, ?) vs. fixed special tokens (grey, S) per step. Right: `revert` after only S'
# steps (generation stopped early) marks the frames whose step was not reached as invalid (grey).

# %%
from lm.generator import UNKNOWN

delay = patterns["delay"]
unknown = torch.full((1, K, T), UNKNOWN)
sequence = delay.build(unknown, special_token=256)[0]  # [K, S]
to_sample = (sequence == UNKNOWN).numpy()
invalid_after = {}
figure, axes = plt.subplots(1, 4, figsize=(14, 2.4), gridspec_kw={"width_ratios": [10, 6, 6, 6]})
draw(axes[0], np.where(to_sample, T - 1, np.nan), np.where(to_sample, "?", "S"), "places the loop samples (?)")
for axis, steps in zip(axes[1:], [delay.num_steps - 1, delay.num_steps - 2, delay.num_steps - 3]):
    _, valid = delay.revert(delay.build(torch.zeros(1, K, T, dtype=torch.long), special_token=256)[:, :, :steps],
                            special_token=256)
    invalid_after[steps] = int((~valid).sum())
    draw(axis, np.where(valid.numpy(), T - 1, np.nan), np.where(valid.numpy(), "ok", "-"),
         f"valid frames after S'={steps} of {delay.num_steps}")
    axis.set_xlabel("frame t")
figure.tight_layout(); plt.show()
invalid_after

# %% [markdown]
# An (untrained) tiny LM run through `LMGenerator` with the delay pattern: the loop performs S - 1 = T + K - 1
# decode steps and every returned code is a real token in [0, card), never the special token — the tail's extra
# samples were discarded.

# %%
from builders import build_generation, build_lm
from lm.generator import LMGenerator

lm_cfg = load_config(["codec=tiny", "lm.model.num_layers=1", "lm.model.dim=32", "lm.model.num_heads=2",
                      "lm.model.ffn_dim=64", "lm.model.cross_attention=false"])
model = build_lm(lm_cfg).eval()
steps_seen = []
generated = LMGenerator(model, build_pattern(lm_cfg), build_generation(lm_cfg.generation)).generate(
    num_frames=T, batch_size=2, generator=torch.Generator().manual_seed(0),
    progress=lambda step, total: steps_seen.append(step))
card = lm_cfg.lm.model.card
print(generated)
print(f"decode steps: {len(steps_seen)}, codes in [0, {card}):", bool(((generated >= 0) & (generated < card)).all()))

# %% [markdown]
# The numbers above, for tests/notebooks/test_notebooks.py.

# %%
summary = {
    "python_prefix": sys.prefix, "num_codebooks": K, "frames": T,
    "layout_shapes": layout_shapes, "round_trip": round_trip,
    "delay_samples_per_step": to_sample.sum(axis=0).tolist(),
    "delay_invalid_after_steps": invalid_after,
    "generated_shape": list(generated.shape), "generated_decode_steps": len(steps_seen),
    "generated_in_range": bool(((generated >= 0) & (generated < card)).all()),
    "figure_size_px": list(plt.imread(RESULTS / "patterns.png").shape),
}
(RESULTS / "patterns.json").write_text(json.dumps(summary, indent=1))
summary
