"""Writes the notebooks of this folder from the cell sources below, with outputs cleared:

    python notebooks/build_notebooks.py

Edit the cells here, not in the .ipynb files, so the notebooks and their source never drift apart. Every notebook
builds tiny models from configs/ (hydra compose + builders.py), trains them for a few seconds on synthetic data,
and ends by writing the numbers it showed to $CODECLM_NOTEBOOK_RESULTS/<notebook>.json (a temporary folder when
unset), which tests/notebooks/test_notebooks.py checks.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = '''\
import json, math, os, sys, tempfile
from pathlib import Path

ROOT = next(folder for folder in [Path.cwd(), *Path.cwd().parents] if (folder / "builders.py").is_file())
sys.path.insert(0, str(ROOT))
RESULTS = Path(os.environ.get("CODECLM_NOTEBOOK_RESULTS") or tempfile.mkdtemp())
RESULTS.mkdir(parents=True, exist_ok=True)

import builders  # noqa: F401  imports eval/plots.py, which selects matplotlib's file-only Agg backend;
# %matplotlib inline below switches back so the figures show in the notebook.
import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir

%matplotlib inline

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is faster than many threads fighting over a shared CPU


def load_config(overrides: list[str]):
    """The project's root config with command-line style overrides, as train.py composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides)'''

CODEC_INTERNALS = [
    new_markdown_cell("""\
# Codec internals: what residual vector quantization does to a clip

We build the tiny codec of `configs/codec/tiny.yaml` (SEANet encoder, 4 codebooks x 256 codes, 75 frames per
second), train it for ~160 steps on synthetic harmonic notes with the multi-scale mel loss only (no GAN, so it
takes seconds), and then look inside:

1. reconstructions with the first 1..K codebooks and their mel distance,
2. how each codebook uses its codes (histogram, entropy, dead codes),
3. the latent before and after quantization, and the residual each codebook leaves.

Quantizer dropout is turned on (`codec.quantizer.dropout=0.5`, DAC) so that one decoder learns every depth."""),
    new_code_cell(SETUP),
    new_code_cell('''\
import torch.nn.functional as F
from builders import build_codec, build_codec_loss
from codec.losses import MultiScaleMelLoss
from eval.audio_metrics import mel_distance
from eval.plots import log_mel

cfg = load_config(["codec=tiny", "codec.quantizer.dropout=0.5"])
codec = build_codec(cfg)
SAMPLE_RATE, K = codec.sample_rate, codec.num_codebooks
print(f"{sum(p.numel() for p in codec.parameters()):,} parameters, hop {codec.hop_length}, "
      f"{codec.frame_rate:g} frames/s, {K} codebooks x {codec.cardinality}")'''),
    new_markdown_cell("""\
## Synthetic notes
Each clip is a decaying note with five harmonics (amplitude 1/h) at a random pitch, uniform in the two octaves
above A2 (110-440 Hz): enough structure for the codec to learn in seconds, no dataset needed. The pitch is
continuous, so one codebook of 256 codes cannot pin it down and later codebooks have something to refine."""),
    new_code_cell('''\
def harmonic_notes(batch: int, seconds: float, generator: torch.Generator) -> torch.Tensor:
    """-> wav [batch, 1, seconds * SAMPLE_RATE]"""
    time = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 110 * 2 ** (2 * torch.rand((batch, 1), generator=generator))  # [batch, 1] Hz
    harmonics = torch.arange(1, 6)[:, None, None]  # [5, 1, 1]
    wav = (torch.sin(2 * math.pi * pitch * harmonics * time) / harmonics).sum(dim=0)  # [batch, samples]
    return (0.3 * wav * torch.exp(-3 * time))[:, None, :]


loss_config = build_codec_loss(cfg)
mel_loss = MultiScaleMelLoss(SAMPLE_RATE, loss_config.mel)
optimizer = torch.optim.Adam(codec.parameters(), lr=1e-2)
generator = torch.Generator().manual_seed(0)
codec.train()
losses = []
for step in range(160):
    wav = harmonic_notes(4, 0.25, generator)
    output = codec(wav)
    loss = mel_loss(output.wav, wav) + 0.1 * F.l1_loss(output.wav, wav) + loss_config.weights.commitment * output.commit_loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
codec.eval()
plt.figure(figsize=(6, 2.5))
plt.plot(losses)
plt.xlabel("step"); plt.ylabel("mel + L1 + commitment"); plt.title("training loss")
plt.show()'''),
    new_markdown_cell("""\
## Reconstruction with 1..K codebooks
Codebook k quantizes what codebooks 1..k-1 left over, so decoding the first k codebooks is the codec at
k x 0.6 kbps. Two mel distances (DAC's 7-scale log-mel L1, `eval.audio_metrics.mel_distance`):
- to the input: the whole codec's error. After 160 steps the decoder is the bottleneck, so this moves little
  with k (a codec trained for hours shows the familiar curve);
- to the decoder's output for the *unquantized* latent: the error the quantizer alone adds. This one falls with
  every codebook, as does the squared error of the quantized latent."""),
    new_code_cell('''\
clip = harmonic_notes(1, 0.5, torch.Generator().manual_seed(1))  # a note the codec has not seen
with torch.no_grad():
    latents = codec.encoder(clip)  # [1, D, F]
    codes = codec.encode(clip)  # [1, K, F]
    reconstructions = [codec.decode(codes[:, :k])[..., : clip.shape[-1]] for k in range(1, K + 1)]
    mel_per_k = [mel_distance(wav, clip, SAMPLE_RATE).item() for wav in reconstructions]
    unquantized = codec.decoder(latents)[..., : clip.shape[-1]]  # [1, 1, T] the decoder without quantization
    quantization_mel_per_k = [mel_distance(wav, unquantized, SAMPLE_RATE).item() for wav in reconstructions]
    latent_error_per_k = [(codec.quantizer.decode(codes[:, :k]) - latents).pow(2).mean().item() for k in range(1, K + 1)]
    silence_mel = mel_distance(torch.zeros_like(clip), clip, SAMPLE_RATE).item()
for k in range(K):
    print(f"{k + 1} codebook(s): mel distance to input {mel_per_k[k]:.3f}, to unquantized decode "
          f"{quantization_mel_per_k[k]:.3f}, latent MSE {latent_error_per_k[k]:.2e}")
print(f"unquantized decode: mel distance to input {mel_distance(unquantized, clip, SAMPLE_RATE).item():.3f}; "
      f"silence: {silence_mel:.3f}")

spectrograms = [("input", log_mel(clip[0], SAMPLE_RATE))] + [
    (f"{k + 1} codebook(s), mel distance {mel_per_k[k]:.3f}", log_mel(wav[0], SAMPLE_RATE))
    for k, wav in enumerate(reconstructions)]
top = spectrograms[0][1].max().item()
figure, axes = plt.subplots(1, K + 1, figsize=(3 * (K + 1), 2.8), sharey=True)
for axis, (title, image) in zip(axes, spectrograms):
    axis.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=top - 6, vmax=top)
    axis.set_title(title, fontsize=9); axis.set_xlabel("frame")
axes[0].set_ylabel("mel bin")
figure.tight_layout(); plt.show()'''),
    new_markdown_cell("""\
## Codebook usage
Histograms of the codes each codebook chose for a batch of fresh notes, their entropy in bits (8 bits = all 256
codes used equally) and the codes the batch never used. Next to them, the quantizer's own training statistics:
the EMA usage entropy and the dead codes (EMA usage below the restart threshold). Every training step moves dead
codes onto batch vectors and resets their usage, so right after training the dead count is 0 even where the
batch leaves most codes unused: a 160-step codec on one kind of sound uses few codes, codebook 0 fewest."""),
    new_code_cell('''\
with torch.no_grad():
    batch_codes = codec.encode(harmonic_notes(16, 0.5, torch.Generator().manual_seed(2)))  # [16, K, F]
stats = codec.quantizer_stats()
usage_entropy_bits, unused_codes = [], []
figure, axes = plt.subplots(1, K, figsize=(12, 2.5), sharey=True)
for q in range(K):
    counts = torch.bincount(batch_codes[:, q].flatten(), minlength=codec.cardinality).float()
    probabilities = counts / counts.sum()
    entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log2()).sum().item()
    usage_entropy_bits.append(entropy)
    unused_codes.append(int((counts == 0).sum()))
    axes[q].bar(range(codec.cardinality), counts, width=1.0)
    axes[q].set_title(f"codebook {q}: {entropy:.2f} bits, {unused_codes[q]} unused", fontsize=9)
    axes[q].set_xlabel("code")
figure.tight_layout(); plt.show()
for q in range(K):
    print(f"codebook {q}: batch entropy {usage_entropy_bits[q]:.2f} bits, {unused_codes[q]} codes unused, "
          f"EMA usage entropy {stats[f'codebook_{q}/entropy_bits']:.2f} bits, dead codes {int(stats[f'codebook_{q}/dead_codes'])}")'''),
    new_markdown_cell("""\
## The latent before and after quantization
Top: the encoder output (D=32 channels x frames). Middle: the sum of the K code vectors the decoder receives.
Bottom rows: the residual left after each codebook, which shrinks as codebooks are added."""),
    new_code_cell('''\
with torch.no_grad():
    quantized = codec.quantizer.decode(codes)  # [1, D, F]
    residuals = [latents - codec.quantizer.decode(codes[:, :k]) for k in range(1, K + 1)]
images = [("latent", latents), ("quantized (K codebooks)", quantized)] + [
    (f"residual after {k + 1} codebook(s)", residual) for k, residual in enumerate(residuals)]
limit = latents.abs().max().item()
figure, axes = plt.subplots(len(images), 1, figsize=(8, 1.6 * len(images)), sharex=True)
for axis, (title, image) in zip(axes, images):
    axis.imshow(image[0], aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit)
    axis.set_title(title, fontsize=9); axis.set_ylabel("channel")
axes[-1].set_xlabel("frame")
figure.tight_layout(); plt.show()'''),
    new_markdown_cell("The numbers above, for tests/notebooks/test_notebooks.py."),
    new_code_cell('''\
summary = {
    "python_prefix": sys.prefix,
    "train_loss_first": losses[0], "train_loss_last": sum(losses[-10:]) / 10,
    "mel_per_k": mel_per_k, "quantization_mel_per_k": quantization_mel_per_k, "latent_error_per_k": latent_error_per_k, "silence_mel": silence_mel,
    "usage_entropy_bits": usage_entropy_bits, "unused_codes": unused_codes,
    "dead_codes": [stats[f"codebook_{q}/dead_codes"] for q in range(K)],
    "cardinality": codec.cardinality,
}
(RESULTS / "codec_internals.json").write_text(json.dumps(summary, indent=1))
summary'''),
]

PATTERNS = [
    new_markdown_cell("""\
# Codebook patterns: how K parallel code streams become one sequence

The LM runs over one sequence of steps; a pattern (`lm/patterns.py`) says which (frame, codebook) places each
step holds. Every other place holds the special token S. Below: each pattern of `lm.pattern.kind` drawn for
K=4 codebooks and T=6 frames, then how the generator handles the delay pattern's tail."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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
    axis.set_xlabel("sequence step s"); axis.set_ylabel("codebook q"); axis.set_title(title, fontsize=9)'''),
    new_markdown_cell("""\
## The five layouts
Colour = frame t, text = codebook letter + frame (`b3` is codebook 1 at frame 3), grey `S` = special token.
Delay (MusicGen) shifts codebook q by q steps: S = T + K steps. Parallel emits a whole frame per step: T + 1.
Unroll flattens every (frame, codebook): K T + 1. VALL-E first emits all of codebook 0, then the rest in
parallel: 2T + 1. MusicLM flattens coarse codebooks (0, 1) for all frames first, then the fine ones: K T + 1.
Step 0 is always empty: the model's first input is the special token."""),
    new_code_cell('''\
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
print(layout_shapes)'''),
    new_markdown_cell("""\
Build and revert are one gather each, so `revert(build(codes)) == codes` for every pattern, and every
(frame, codebook) place appears exactly once in the layout:"""),
    new_code_cell('''\
codes = torch.randint(0, 256, (2, K, T))
round_trip = {}
for kind, pattern in patterns.items():
    reverted, valid = pattern.revert(pattern.build(codes, special_token=256), special_token=256)
    placed = np.bincount(pattern.sequence_index.flatten().numpy(), minlength=T + 1)[:T]  # places per frame
    round_trip[kind] = bool(torch.equal(reverted, codes) and valid.all() and (placed == K).all())
round_trip'''),
    new_markdown_cell("""\
## The delay pattern's tail at generation
`LMGenerator` builds the window's sequence from codes that are all `UNKNOWN` (-1) except the prompt: the
pattern writes the special token wherever it places nothing, so the places the loop must sample are exactly the
`UNKNOWN` ones. At every step all K codebooks are sampled, but only `UNKNOWN` places are overwritten: at the
last K-1 steps the lower codebooks sit in the tail (special tokens) and their samples are thrown away.
Left: what is sampled (yellow, ?) vs. fixed special tokens (grey, S) per step. Right: `revert` after only S'
steps (generation stopped early) marks the frames whose step was not reached as invalid (grey)."""),
    new_code_cell('''\
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
invalid_after'''),
    new_markdown_cell("""\
An (untrained) tiny LM run through `LMGenerator` with the delay pattern: the loop performs S - 1 = T + K - 1
decode steps and every returned code is a real token in [0, card), never the special token — the tail's extra
samples were discarded."""),
    new_code_cell('''\
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
print(f"decode steps: {len(steps_seen)}, codes in [0, {card}):", bool(((generated >= 0) & (generated < card)).all()))'''),
    new_markdown_cell("The numbers above, for tests/notebooks/test_notebooks.py."),
    new_code_cell('''\
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
summary'''),
]

LM_INTERNALS = [
    new_markdown_cell("""\
# LM internals: attention, entropy over time, guidance and sampling

A tiny LM (`configs/lm/tiny.yaml`, 2 layers) with a hashed-word lookup conditioner routed to cross-attention
learns a toy language in a few seconds: a description `"rising line"` or `"falling line"` selects a token range
(0..15 or 16..31) and the direction a line of tokens walks in; the start is random. Codebook q is the same line
shifted by 4q. Classifier-free-guidance dropout (0.3) trains the unconditional branch at the same time.
Then we look at attention maps, per-codebook entropy over time, the effect of `cfg_coef`, and a
temperature / top-k sweep."""),
    new_code_cell(SETUP),
    new_code_cell('''\
from builders import build_conditioner, build_lm, build_pattern
from conditioners.attributes import ConditioningAttributes
from lit.lm_module import codebook_losses

cfg = load_config(["codec=tiny", "conditioner=none", "conditioner.cfg_dropout=0.3", "lm.model.num_layers=2",
                   "+conditioner.lookup={description: {hash_buckets: 64}}", "+conditioner.fuser={description: cross}"])
model, pattern_provider, conditioner = build_lm(cfg), build_pattern(cfg), build_conditioner(cfg)
K, CARD, SPECIAL = model.config.num_codebooks, model.config.card, model.special_token
T = 12
pattern = pattern_provider.get_pattern(T)
print(f"LM: {sum(p.numel() for p in model.parameters()):,} parameters, K={K}, card={CARD}, "
      f"{cfg.lm.pattern.kind} pattern: T={T} frames -> S={pattern.num_steps} steps")


def toy_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """-> codes [batch, K, T] and the descriptions that generated them."""
    rising = torch.randint(0, 2, (batch,), generator=generator).bool()
    start = torch.randint(0, 16, (batch, 1, 1), generator=generator)
    direction = torch.where(rising, 1, -1)[:, None, None]
    line = start + direction * torch.arange(T) + 4 * torch.arange(K)[:, None]  # [batch, K, T]
    codes = line % 16 + torch.where(rising, 0, 16)[:, None, None]
    return codes, ["rising line" if up else "falling line" for up in rising.tolist()]


def conditions_of(descriptions: list[str]):
    return conditioner([ConditioningAttributes(text={"description": text}) for text in descriptions])'''),
    new_markdown_cell("""\
## Training (a few seconds)
Teacher forcing through the pattern: codes -> sequence -> logits -> logits re-aligned with the codes
(`revert_logits`) -> per-codebook cross-entropy over the valid places. Perfect knowledge of the start gives 0;
guessing the start among 16 values costs log(16) = 2.77 nats on the first frame only."""),
    new_code_cell('''\
parameters = [*model.parameters(), *conditioner.parameters()]
optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=0.0)
generator = torch.Generator().manual_seed(0)
model.train(); conditioner.train()
losses = []
for step in range(150):
    codes, descriptions = toy_batch(16, generator)
    logits = model(pattern.build(codes, special_token=SPECIAL), conditions_of(descriptions))  # [B, K, S, card]
    aligned_logits, valid = pattern.revert_logits(logits)  # [B, K, T, card], [K, T]
    cross_entropy, _ = codebook_losses(aligned_logits, codes, valid)  # [K]
    loss = cross_entropy.mean()
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    losses.append(loss.item())
model.eval(); conditioner.eval()
plt.figure(figsize=(6, 2.5)); plt.plot(losses); plt.xlabel("step"); plt.ylabel("cross-entropy (nats)")
plt.show()
print(f"loss {losses[0]:.2f} -> {sum(losses[-10:]) / 10:.2f}")'''),
    new_markdown_cell("""\
## Attention maps
`scaled_dot_product_attention` never materialises the attention weights, so we recompute them: forward hooks
keep each attention module's input, and the weights are softmax(q k^T / sqrt(d)) from the layer's own `qkv`
(self) or `query` and the projected memory keys (cross). Pushing the recomputed weights through the values and
the output projection must give back the module's real output — the check printed below.
Self-attention is causal (upper triangle empty); cross-attention shows how much each step reads the words
`rising` / `line` of the description."""),
    new_code_cell('''\
from einops import rearrange

captured = {}


def keep(name):
    def hook(module, args, output):
        captured[name] = (args, output)
    return hook


handles = []
for index, layer in enumerate(model.transformer.layers):
    handles.append(layer.self_attention.register_forward_hook(keep(f"self{index}")))
    handles.append(layer.cross_attention.register_forward_hook(keep(f"cross{index}")))
prompt_descriptions = ["rising line"]
prompt_codes = ((3 + torch.arange(T) + 4 * torch.arange(K)[:, None]) % 16)[None]  # [1, K, T] rising from 3
with torch.no_grad():
    prompt_sequence = pattern.build(prompt_codes, special_token=SPECIAL)
    prompt_logits = model(prompt_sequence, conditions_of(prompt_descriptions))
for handle in handles:
    handle.remove()


def self_attention_weights(attention, x):
    """x [B, N, D] -> weights [B, H, N, N], and the module output rebuilt from them [B, N, D]."""
    B, N, D = x.shape
    q, k, v = attention.qkv(x).view(B, N, 3, attention.num_heads, D // attention.num_heads).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // attention.num_heads)
    scores = scores.masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights, attention.out(rearrange(weights @ v, "b h n d -> b n (h d)"))


def cross_attention_weights(attention, x, memory):
    """x [B, N, D], memory keys [B, H, L, D / H] -> weights [B, H, N, L], and the rebuilt output [B, N, D]."""
    B, N, D = x.shape
    q = rearrange(attention.query(x), "b n (h d) -> b h n d", h=attention.num_heads)
    scores = (q @ memory.keys.transpose(-1, -2) / math.sqrt(D // attention.num_heads)).masked_fill(~memory.mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights, attention.out(rearrange(weights @ memory.values, "b h n d -> b n (h d)"))


attention_rebuild_error = 0.0
maps = {}
with torch.no_grad():
    for index, layer in enumerate(model.transformer.layers):
        (x,), output = captured[f"self{index}"]
        maps[f"self{index}"], rebuilt = self_attention_weights(layer.self_attention, x)
        attention_rebuild_error = max(attention_rebuild_error, (rebuilt - output).abs().max().item())
        (x, memory), output = captured[f"cross{index}"]
        maps[f"cross{index}"], rebuilt = cross_attention_weights(layer.cross_attention, x, memory)
        attention_rebuild_error = max(attention_rebuild_error, (rebuilt - output).abs().max().item())
print(f"max |rebuilt - module output| = {attention_rebuild_error:.2e}")

layers = len(model.transformer.layers)
figure, axes = plt.subplots(2, layers, figsize=(5 * layers, 7), gridspec_kw={"height_ratios": [3, 1.2]})
for index in range(layers):
    axes[0, index].imshow(maps[f"self{index}"][0].mean(dim=0), cmap="magma")
    axes[0, index].set_title(f"layer {index} self-attention (mean over heads)", fontsize=9)
    axes[0, index].set_xlabel("key step"); axes[0, index].set_ylabel("query step")
    axes[1, index].imshow(maps[f"cross{index}"][0].mean(dim=0).T, cmap="magma", aspect="auto", vmin=0, vmax=1)
    axes[1, index].set_yticks(range(2), ["rising", "line"])
    axes[1, index].set_title(f"layer {index} cross-attention", fontsize=9); axes[1, index].set_xlabel("query step")
figure.tight_layout(); plt.show()
causal_mass_above_diagonal = max(maps[f"self{index}"][0].triu(diagonal=1).sum().item() for index in range(layers))'''),
    new_markdown_cell("""\
## Per-codebook token entropy over time
The entropy (bits) of the model's distribution for each (codebook, frame) of the prompt, read from the same
forward pass. Frame 0 of codebook 0 is a guess of the start among 16 values (4 bits); once it is known the
rest of the line is determined, and the other codebooks, shifted by 4q, are predictable from codebook 0."""),
    new_code_cell('''\
def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """logits [..., card] -> entropy in bits [...]"""
    log_probabilities = logits.float().log_softmax(dim=-1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=-1) / math.log(2)


aligned_logits, _ = pattern.revert_logits(prompt_logits)  # [1, K, T, card]
token_entropy = entropy_bits(aligned_logits)[0]  # [K, T]
plt.figure(figsize=(7, 3))
for q in range(K):
    plt.plot(token_entropy[q], marker="o", label=f"codebook {q}")
plt.xlabel("frame t"); plt.ylabel("entropy (bits)"); plt.legend(); plt.show()'''),
    new_markdown_cell("""\
## Classifier-free guidance: entropy vs `cfg_coef`
At the first step the generator combines the conditional logits (description given) and the null-condition
logits as `uncond + cfg_coef * (cond - uncond)` (`lm.sampling.guide`). `cfg_coef=0` is the unconditional
model (either half of the vocabulary: ~5 bits), 1 is the plain conditional model (~4 bits), and larger values
sharpen further, moving probability mass onto the tokens the description asks for (0..15 for "rising")."""),
    new_code_cell('''\
from lm.sampling import guide, sample

with torch.no_grad():
    conditions = conditions_of(["rising line"])
    first_step = pattern.build(torch.zeros(1, K, T, dtype=torch.long), special_token=SPECIAL)[:, :, :1]
    cond_logits = model(first_step, conditions)[0, 0, 0]  # codebook 0, predicting frame 0: [card]
    uncond_logits = model(first_step, conditions.null())[0, 0, 0]
cfg_coefs = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0]
cfg_entropy_bits, cfg_mass_on_condition = [], []
for cfg_coef in cfg_coefs:
    guided = guide(cond_logits, uncond_logits, cfg_coef)
    cfg_entropy_bits.append(entropy_bits(guided).item())
    cfg_mass_on_condition.append(guided.softmax(dim=-1)[:16].sum().item())
figure, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(cfg_coefs, cfg_entropy_bits, marker="o"); axes[0].set_xlabel("cfg_coef"); axes[0].set_ylabel("entropy (bits)")
axes[1].plot(cfg_coefs, cfg_mass_on_condition, marker="o"); axes[1].set_xlabel("cfg_coef")
axes[1].set_ylabel("probability of tokens 0..15")
figure.tight_layout(); plt.show()
list(zip(cfg_coefs, [round(value, 3) for value in cfg_entropy_bits]))'''),
    new_markdown_cell("""\
## Temperature and top-k
2,000 draws from the guided (cfg_coef 3) first-step distribution with `lm.sampling.sample` for each setting:
the number of distinct tokens and their empirical entropy. Temperature 0 is greedy (one token); top-k caps the
distinct tokens at k; raising the temperature flattens the distribution."""),
    new_code_cell('''\
guided = guide(cond_logits, uncond_logits, 3.0).expand(2000, -1)  # [draws, card]
settings = [(0.0, 0), (0.5, 0), (1.0, 0), (2.0, 0), (1.0, 2), (1.0, 8), (2.0, 8)]
sweep = []
for temperature, top_k in settings:
    tokens = sample(guided, temperature=temperature, top_k=top_k, top_p=0.0, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=CARD).float()
    probabilities = counts[counts > 0] / counts.sum()
    sweep.append({"temperature": temperature, "top_k": top_k, "distinct": int((counts > 0).sum()),
                  "entropy_bits": -(probabilities * probabilities.log2()).sum().item()})
for row in sweep:
    print(row)'''),
    new_markdown_cell("The numbers above, for tests/notebooks/test_notebooks.py."),
    new_code_cell('''\
summary = {
    "python_prefix": sys.prefix,
    "train_loss_first": losses[0], "train_loss_last": sum(losses[-10:]) / 10,
    "attention_rebuild_error": attention_rebuild_error, "causal_mass_above_diagonal": causal_mass_above_diagonal,
    "cross_attention_row_sums": maps["cross0"][0].sum(dim=-1).flatten().tolist(),
    "token_entropy_bits": token_entropy.tolist(),
    "cfg_coefs": cfg_coefs, "cfg_entropy_bits": cfg_entropy_bits, "cfg_mass_on_condition": cfg_mass_on_condition,
    "sampling_sweep": sweep,
}
(RESULTS / "lm_internals.json").write_text(json.dumps(summary, indent=1))
{key: value for key, value in summary.items() if key not in ("token_entropy_bits", "cross_attention_row_sums")}'''),
]

PRETRAINED_INTERNALS = [
    new_markdown_cell("""\
# Inside a pretrained MusicGen

A converted checkpoint (docs/interop.md) opened like any export: which codes each codebook uses, how much each
step of a generation reads each word of the caption, and how sure the model is of each codebook along the way.

Set `CODECLM_CHECKPOINT` to a converted folder (`python -m interop.convert pretrained/musicgen-small --out
pretrained/musicgen-small-codeclm`) to look at a real model. Unset, the notebook builds a tiny random HF MusicGen
(`interop/tiny.py`) and converts it, which is what CI runs: the plots are then of noise, the checks still hold."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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
      f"{codec.frame_rate:g} Hz; cross_attention_mask={lm.config.cross_attention_mask}")'''),
    new_markdown_cell("""\
## A generation, and what the model thought at every step
We sample 2 seconds for two captions through the generation pipeline (the full distribution at temperature 1,
CFG 3, a seed per caption), then run the generated sequence through the model once more, teacher-forced: the
logits at each step are the conditional distributions the sampler drew from (before guidance), so their entropy
shows where the model hesitates."""),
    new_code_cell('''\
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
print("mean entropy per codebook (bits):", [round(value, 2) for value in entropy_bits.mean(dim=(0, 2)).tolist()])'''),
    new_markdown_cell("""\
## Codebook usage
How many of the `card` codes each codebook used in this generation, and the usage entropy (log2 card = all codes
equally often). The first codebook carries the coarse structure; later ones refine the residual."""),
    new_code_cell('''\
counts = torch.stack([torch.bincount(codes[:, k].flatten(), minlength=card) for k in range(K)]).float()  # [K, card]
usage = counts / counts.sum(dim=1, keepdim=True)
usage_entropy_bits = [-(row[row > 0] * row[row > 0].log2()).sum().item() for row in usage]
figure, axes = plt.subplots(1, K, figsize=(3 * K, 2.5), sharey=True)
for k, axis in enumerate(axes):
    axis.bar(range(card), counts[k], width=1.0)
    axis.set_title(f"codebook {k}: {int((counts[k] > 0).sum())} codes, {usage_entropy_bits[k]:.1f} bits", fontsize=8)
plt.show()'''),
    new_markdown_cell("""\
## Attention to the text
Hooks keep each cross-attention module's input; the weights are softmax(q k^T / sqrt(d)) from the layer's own
`query` and the projected memory (`CrossMemory`, with its padding mask when `cross_attention_mask` is on). Each
row sums to 1; padded positions of the shorter caption get nothing when the mask is on."""),
    new_code_cell('''\
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
print("attention mass on padding per caption:", padding_mass)'''),
    new_code_cell('''\
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
{key: value for key, value in summary.items() if key != "cross_attention_row_sums"}'''),
]

NOTEBOOKS = {"codec_internals": CODEC_INTERNALS, "patterns": PATTERNS, "lm_internals": LM_INTERNALS,
             "pretrained_internals": PRETRAINED_INTERNALS}


def main() -> None:
    folder = Path(__file__).parent
    for name, cells in NOTEBOOKS.items():
        for index, cell in enumerate(cells):
            cell.id = f"{name}-{index}"  # stable ids: regenerating an unchanged notebook changes no byte
        notebook = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbformat.validate(notebook)
        nbformat.write(notebook, folder / f"{name}.ipynb")


if __name__ == "__main__":
    main()
