# %% [markdown]
# # LM internals: attention, entropy over time, guidance and sampling
#
# A tiny LM (`configs/lm/tiny.yaml`, 2 layers) with a hashed-word lookup conditioner routed to cross-attention
# learns a toy language in a few seconds: a description `"rising line"` or `"falling line"` selects a token range
# (0..15 or 16..31) and the direction a line of tokens walks in; the start is random. Codebook q is the same line
# shifted by 4q. Classifier-free-guidance dropout (0.3) trains the unconditional branch at the same time.
# Then we look at attention maps, per-codebook entropy over time, the effect of `cfg_coef`, and a
# temperature / top-k sweep.

# %%
import json, math, sys

import matplotlib.pyplot as plt
import torch
from _setup import RESULTS, load_config  # puts the repository on sys.path, imports builders

# builders selected matplotlib's file-only Agg backend: back to the notebook's, so that figures show below cells
# %matplotlib inline
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is faster than many threads fighting over a shared CPU

# %%
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
    return conditioner([ConditioningAttributes(text={"description": text}) for text in descriptions])


# %% [markdown]
# ## Training (a few seconds)
# Teacher forcing through the pattern: codes -> sequence -> logits -> logits re-aligned with the codes
# (`revert_logits`) -> per-codebook cross-entropy over the valid places. Perfect knowledge of the start gives 0;
# guessing the start among 16 values costs log(16) = 2.77 nats on the first frame only.

# %%
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
print(f"loss {losses[0]:.2f} -> {sum(losses[-10:]) / 10:.2f}")

# %% [markdown]
# ## Attention maps
# `scaled_dot_product_attention` never materialises the attention weights, so we recompute them: forward hooks
# keep each attention module's input, and the weights are softmax(q k^T / sqrt(d)) from the layer's own `qkv`
# (self) or `query` and the projected memory keys (cross). Pushing the recomputed weights through the values and
# the output projection must give back the module's real output — the check printed below.
# Self-attention is causal (upper triangle empty); cross-attention shows how much each step reads the words
# `rising` / `line` of the description.

# %%
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
causal_mass_above_diagonal = max(maps[f"self{index}"][0].triu(diagonal=1).sum().item() for index in range(layers))


# %% [markdown]
# ## Per-codebook token entropy over time
# The entropy (bits) of the model's distribution for each (codebook, frame) of the prompt, read from the same
# forward pass. Frame 0 of codebook 0 is a guess of the start among 16 values (4 bits); once it is known the
# rest of the line is determined, and the other codebooks, shifted by 4q, are predictable from codebook 0.

# %%
def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """logits [..., card] -> entropy in bits [...]"""
    log_probabilities = logits.float().log_softmax(dim=-1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=-1) / math.log(2)


aligned_logits, _ = pattern.revert_logits(prompt_logits)  # [1, K, T, card]
token_entropy = entropy_bits(aligned_logits)[0]  # [K, T]
plt.figure(figsize=(7, 3))
for q in range(K):
    plt.plot(token_entropy[q], marker="o", label=f"codebook {q}")
plt.xlabel("frame t"); plt.ylabel("entropy (bits)"); plt.legend(); plt.show()

# %% [markdown]
# ## Classifier-free guidance: entropy vs `cfg_coef`
# At the first step the generator combines the conditional logits (description given) and the null-condition
# logits as `uncond + cfg_coef * (cond - uncond)` (`lm.sampling.guide`). `cfg_coef=0` is the unconditional
# model (either half of the vocabulary: ~5 bits), 1 is the plain conditional model (~4 bits), and larger values
# sharpen further, moving probability mass onto the tokens the description asks for (0..15 for "rising").

# %%
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
list(zip(cfg_coefs, [round(value, 3) for value in cfg_entropy_bits]))

# %% [markdown]
# ## Temperature and top-k
# 2,000 draws from the guided (cfg_coef 3) first-step distribution with `lm.sampling.sample` for each setting:
# the number of distinct tokens and their empirical entropy. Temperature 0 is greedy (one token); top-k caps the
# distinct tokens at k; raising the temperature flattens the distribution.

# %%
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
    print(row)

# %% [markdown]
# The numbers above, for tests/notebooks/test_notebooks.py.

# %%
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
{key: value for key, value in summary.items() if key not in ("token_entropy_bits", "cross_attention_row_sums")}
