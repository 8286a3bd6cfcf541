"""One codebook level: nearest-neighbour lookup, straight-through gradient, usage tracking, dead-code restart.

Two lookups:
- `EMACodebook` (SoundStream / EnCodec): codes live in the latent space; the codebook is a buffer moved by
  exponential moving averages of the vectors assigned to each code (van den Oord et al. 2017, App. A.1),
  initialised by k-means on the first training batch. No gradient reaches it, so its codebook loss is 0.
- `FactorizedCodebook` (DAC, Kumar et al. 2023): project to a low dimension with a weight-normed 1x1 conv,
  L2-normalise, take the cosine nearest neighbour, project back; the codebook is a parameter learned by
  gradient through the codebook loss. As in DAC's code, the lookup is cosine but the returned vector (and the
  losses) use the un-normalised codebook row.

Both keep `usage`, an EMA of how many vectors each code receives per training batch, which drives the
dead-code restart and the logged usage entropy. A code is dead when its usage is below `dead_code_threshold`:
an absolute EMA count (`dead_code_mode="count"`, AudioCraft uses 2) or a fraction of the uniform usage
total / codebook_size (`"uniform_fraction"`, Mimi uses 0.1, independent of the batch size). Dead codes are
replaced by random vectors of the current batch and given the uniform usage so they are not expired again
at once.

Under torch.distributed the batch statistics are summed over ranks, and k-means centroids and restart
vectors are taken from rank 0, so every rank keeps the same codebook.
"""

from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

DeadCodeMode = Literal["count", "uniform_fraction"]
DEAD_CODE_MODES = ("count", "uniform_fraction")


class CodebookOutput(NamedTuple):
    quantized: Tensor  # [B, D, T] code vectors; straight-through: the gradient reaches the input unchanged
    codes: Tensor  # [B, T] long
    commit_loss: Tensor  # [B] mean squared input-to-code distance per item, gradient to the input only
    codebook_loss: Tensor  # [B] same distance, gradient to the codebook only (zeros for EMA codebooks)


def _sum_over_ranks(tensor: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def _from_rank_zero(tensor: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
    return tensor


def nearest_euclidean(vectors: Tensor, codebook: Tensor) -> Tensor:
    """vectors [N, D], codebook [card, D] -> index of the closest code [N]"""
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every code, so it is left out.
    distances = torch.addmm(codebook.pow(2).sum(-1), vectors, codebook.t(), alpha=-2.0)  # [N, card]
    return distances.argmin(dim=-1)


def kmeans(vectors: Tensor, num_clusters: int, num_iters: int) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means. vectors [N, D] -> centroids [num_clusters, D], cluster sizes [num_clusters].

    Centroids start at random data points (with replacement when N < num_clusters); an empty cluster keeps
    its previous centroid. `num_iters=0` returns the random data points.
    """
    N = vectors.shape[0]
    start = torch.randperm(N, device=vectors.device)[:num_clusters] if N >= num_clusters else (
        torch.randint(0, N, (num_clusters,), device=vectors.device)
    )
    centroids = vectors[start]
    for _ in range(num_iters):
        assignment = nearest_euclidean(vectors, centroids)
        sizes = torch.bincount(assignment, minlength=num_clusters).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        centroids = torch.where(sizes[:, None] > 0, sums / sizes.clamp(min=1)[:, None], centroids)
    sizes = torch.bincount(nearest_euclidean(vectors, centroids), minlength=num_clusters).to(vectors.dtype)
    return centroids, sizes


class Codebook(nn.Module):
    """Usage tracking and dead-code restart shared by both lookups; subclasses define the lookup."""

    def __init__(
        self, codebook_size: int, ema_decay: float, dead_code_threshold: float, dead_code_mode: DeadCodeMode
    ) -> None:
        super().__init__()
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if dead_code_mode not in DEAD_CODE_MODES:
            raise ValueError(f"dead_code_mode must be one of {DEAD_CODE_MODES}, got {dead_code_mode!r}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.codebook_size = codebook_size
        self.ema_decay = ema_decay
        self.dead_code_threshold = dead_code_threshold
        self.dead_code_mode = dead_code_mode
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("usage", torch.zeros(codebook_size))  # [card] EMA of assignments per batch

    def dead_codes(self) -> Tensor:
        """[card] bool: codes whose usage is below the threshold."""
        limit = self.dead_code_threshold
        if self.dead_code_mode == "uniform_fraction":
            limit = limit * self.usage.sum() / self.codebook_size
        return self.usage < limit

    def usage_entropy_bits(self) -> float:
        """Entropy of the usage distribution, log2(card) when every code is used equally."""
        probabilities = self.usage / self.usage.sum().clamp(min=1e-12)
        return float(-(probabilities * torch.log2(probabilities.clamp(min=1e-12))).sum())

    @torch.no_grad()
    def _track_usage(self, codes: Tensor) -> Tensor:
        """Updates the EMA usage with the codes [N] of a batch; returns this batch's counts [card]."""
        counts = _sum_over_ranks(torch.bincount(codes, minlength=self.codebook_size).to(self.usage.dtype))
        self.usage.lerp_(counts, 1.0 - self.ema_decay)
        return counts

    @torch.no_grad()
    def _restart_dead_codes(self, vectors: Tensor) -> None:
        """Moves dead codes onto random vectors [N, d] of the batch (in the space the codes live in)."""
        dead = self.dead_codes()
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        picks = torch.randint(0, vectors.shape[0], (num_dead,), device=vectors.device)
        replacements = _from_rank_zero(vectors[picks].contiguous())
        self.usage[dead] = self.usage.sum() / self.codebook_size
        self._set_codes(dead, replacements)

    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        raise NotImplementedError


class EMACodebook(Codebook):
    """Euclidean lookup in the latent space; codebook moved by EMA, k-means initialised. [B, D, T]"""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        ema_decay: float,
        kmeans_iters: int,
        dead_code_threshold: float,
        dead_code_mode: DeadCodeMode,
        epsilon: float = 1e-5,
    ) -> None:
        super().__init__(codebook_size, ema_decay, dead_code_threshold, dead_code_mode)
        self.kmeans_iters = kmeans_iters
        self.epsilon = epsilon
        self.register_buffer("codebook", torch.randn(codebook_size, dim))  # [card, D]
        self.register_buffer("code_sum", torch.zeros(codebook_size, dim))  # [card, D] EMA of assigned vectors' sum

    def encode(self, latents: Tensor) -> Tensor:
        """[B, D, T] -> codes [B, T]"""
        B, D, T = latents.shape
        codes = nearest_euclidean(rearrange(latents, "b d t -> (b t) d"), self.codebook)
        return rearrange(codes, "(b t) -> b t", b=B)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, T] -> [B, D, T]"""
        return rearrange(F.embedding(codes, self.codebook), "b t d -> b d t")

    def forward(self, latents: Tensor) -> CodebookOutput:
        if self.training and not self.initialized:
            self._init_with_kmeans(rearrange(latents.detach(), "b d t -> (b t) d"))
        codes = self.encode(latents.detach())
        quantized = self.decode(codes)
        if self.training:
            self._ema_update(rearrange(latents.detach(), "b d t -> (b t) d"), codes.flatten())
        commit_loss = (latents - quantized).pow(2).mean(dim=(1, 2))
        quantized = latents + (quantized - latents).detach()  # noop forward, straight-through gradient backward
        return CodebookOutput(quantized, codes, commit_loss, torch.zeros_like(commit_loss))

    @torch.no_grad()
    def _init_with_kmeans(self, vectors: Tensor) -> None:
        centroids, sizes = kmeans(vectors, self.codebook_size, self.kmeans_iters)
        self.codebook.copy_(_from_rank_zero(centroids))
        self.usage.copy_(_sum_over_ranks(sizes))
        self.code_sum.copy_(self.codebook * self.usage[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, vectors: Tensor, codes: Tensor) -> None:
        self._track_usage(codes)
        sums = _sum_over_ranks(torch.zeros_like(self.code_sum).index_add_(0, codes, vectors))
        self.code_sum.lerp_(sums, 1.0 - self.ema_decay)
        # Laplace smoothing: a code with (almost) no usage does not divide by zero.
        total = self.usage.sum()
        smoothed_usage = (self.usage + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.codebook.copy_(self.code_sum / smoothed_usage[:, None])
        self._restart_dead_codes(vectors)

    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        self.codebook[which] = vectors
        self.code_sum[which] = vectors * self.usage[which][:, None]


class FactorizedCodebook(Codebook):
    """DAC lookup: project D -> codebook_dim, cosine nearest neighbour, project back. [B, D, T]"""

    def __init__(
        self,
        dim: int,
        codebook_dim: int,
        codebook_size: int,
        ema_decay: float,
        dead_code_threshold: float,
        dead_code_mode: DeadCodeMode,
    ) -> None:
        super().__init__(codebook_size, ema_decay, dead_code_threshold, dead_code_mode)
        self.in_proj = weight_norm(nn.Conv1d(dim, codebook_dim, kernel_size=1))
        self.out_proj = weight_norm(nn.Conv1d(codebook_dim, dim, kernel_size=1))
        self.codebook = nn.Parameter(torch.randn(codebook_size, codebook_dim))  # [card, d]

    def _lookup(self, projected: Tensor) -> Tensor:
        """projected [B, d, T] -> codes [B, T] by cosine similarity"""
        B = projected.shape[0]
        vectors = F.normalize(rearrange(projected, "b d t -> (b t) d"), dim=-1)
        similarity = vectors @ F.normalize(self.codebook, dim=-1).t()  # [(B T), card]
        return rearrange(similarity.argmax(dim=-1), "(b t) -> b t", b=B)

    def encode(self, latents: Tensor) -> Tensor:
        """[B, D, T] -> codes [B, T]"""
        return self._lookup(self.in_proj(latents))

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, T] -> [B, D, T]"""
        return self.out_proj(rearrange(F.embedding(codes, self.codebook), "b t d -> b d t"))

    def forward(self, latents: Tensor) -> CodebookOutput:
        projected = self.in_proj(latents)  # [B, d, T]
        with torch.no_grad():
            codes = self._lookup(projected)
        code_vectors = rearrange(F.embedding(codes, self.codebook), "b t d -> b d t")  # [B, d, T]
        commit_loss = (projected - code_vectors.detach()).pow(2).mean(dim=(1, 2))
        codebook_loss = (code_vectors - projected.detach()).pow(2).mean(dim=(1, 2))
        quantized = projected + (code_vectors - projected).detach()  # straight-through in the low-dim space
        if self.training:
            self._update_usage(rearrange(projected.detach(), "b d t -> (b t) d"), codes.flatten())
        return CodebookOutput(self.out_proj(quantized), codes, commit_loss, codebook_loss)

    @torch.no_grad()
    def _update_usage(self, vectors: Tensor, codes: Tensor) -> None:
        if not self.initialized:
            # First batch: start from its counts, not from zero, or every code would look dead for ~1/(1-decay) steps.
            self.usage.copy_(_sum_over_ranks(torch.bincount(codes, minlength=self.codebook_size).to(self.usage.dtype)))
            self.initialized.fill_(True)
        else:
            self._track_usage(codes)
        self._restart_dead_codes(vectors)

    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        self.codebook.data[which] = vectors


def codebook_stats(codebooks: nn.ModuleList) -> dict[str, float]:
    """For logging: each codebook's usage entropy in bits (log2(card) = uniform use) and its number of dead codes."""
    stats = {}
    for k, codebook in enumerate(codebooks):
        stats[f"codebook_{k}/entropy_bits"] = codebook.usage_entropy_bits()
        stats[f"codebook_{k}/dead_codes"] = float(codebook.dead_codes().sum())
    return stats
