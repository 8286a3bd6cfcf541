# %% [markdown]
# # Codec internals: what residual vector quantization does to a clip
#
# We build the tiny codec of `configs/codec/tiny.yaml` (SEANet encoder, 4 codebooks x 256 codes, 75 frames per
# second), train it for ~160 steps on synthetic harmonic notes with the multi-scale mel loss only (no GAN, so it
# takes seconds), and then look inside:
#
# 1. reconstructions with the first 1..K codebooks and their mel distance,
# 2. how each codebook uses its codes (histogram, entropy, dead codes),
# 3. the latent before and after quantization, and the residual each codebook leaves.
#
# Quantizer dropout is turned on (`codec.quantizer.dropout=0.5`, DAC) so that one decoder learns every depth.

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
import torch.nn.functional as F
from builders import build_codec, build_codec_loss
from codec.losses import MultiScaleMelLoss
from eval.audio_metrics import mel_distance
from eval.plots import log_mel

cfg = load_config(["codec=tiny", "codec.quantizer.dropout=0.5"])
codec = build_codec(cfg)
SAMPLE_RATE, K = codec.sample_rate, codec.num_codebooks
print(f"{sum(p.numel() for p in codec.parameters()):,} parameters, hop {codec.hop_length}, "
      f"{codec.frame_rate:g} frames/s, {K} codebooks x {codec.cardinality}")


# %% [markdown]
# ## Synthetic notes
# Each clip is a decaying note with five harmonics (amplitude 1/h) at a random pitch, uniform in the two octaves
# above A2 (110-440 Hz): enough structure for the codec to learn in seconds, no dataset needed. The pitch is
# continuous, so one codebook of 256 codes cannot pin it down and later codebooks have something to refine.

# %%
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
plt.show()

# %% [markdown]
# ## Reconstruction with 1..K codebooks
# Codebook k quantizes what codebooks 1..k-1 left over, so decoding the first k codebooks is the codec at
# k x 0.6 kbps. Two mel distances (DAC's 7-scale log-mel L1, `eval.audio_metrics.mel_distance`):
# - to the input: the whole codec's error. After 160 steps the decoder is the bottleneck, so this moves little
#   with k (a codec trained for hours shows the familiar curve);
# - to the decoder's output for the *unquantized* latent: the error the quantizer alone adds. This one falls with
#   every codebook, as does the squared error of the quantized latent.

# %%
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
figure.tight_layout(); plt.show()

# %% [markdown]
# ## Codebook usage
# Histograms of the codes each codebook chose for a batch of fresh notes, their entropy in bits (8 bits = all 256
# codes used equally) and the codes the batch never used. Next to them, the quantizer's own training statistics:
# the EMA usage entropy and the dead codes (EMA usage below the restart threshold). Every training step moves dead
# codes onto batch vectors and resets their usage, so right after training the dead count is 0 even where the
# batch leaves most codes unused: a 160-step codec on one kind of sound uses few codes, codebook 0 fewest.

# %%
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
          f"EMA usage entropy {stats[f'codebook_{q}/entropy_bits']:.2f} bits, dead codes {int(stats[f'codebook_{q}/dead_codes'])}")

# %% [markdown]
# ## The latent before and after quantization
# Top: the encoder output (D=32 channels x frames). Middle: the sum of the K code vectors the decoder receives.
# Bottom rows: the residual left after each codebook, which shrinks as codebooks are added.

# %%
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
figure.tight_layout(); plt.show()

# %% [markdown]
# The numbers above, for tests/notebooks/test_notebooks.py.

# %%
summary = {
    "python_prefix": sys.prefix,
    "train_loss_first": losses[0], "train_loss_last": sum(losses[-10:]) / 10,
    "mel_per_k": mel_per_k, "quantization_mel_per_k": quantization_mel_per_k, "latent_error_per_k": latent_error_per_k, "silence_mel": silence_mel,
    "usage_entropy_bits": usage_entropy_bits, "unused_codes": unused_codes,
    "dead_codes": [stats[f"codebook_{q}/dead_codes"] for q in range(K)],
    "cardinality": codec.cardinality,
}
(RESULTS / "codec_internals.json").write_text(json.dumps(summary, indent=1))
summary
