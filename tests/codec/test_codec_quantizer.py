"""Residual VQ: k-means init, EMA, dead-code restart, dropout, straight-through, bitrate, usage stats."""

import copy
import math

import pytest
import torch

from codec import Codec, CodecConfig
from codec.rvq import QuantizerConfig, ResidualVectorQuantizer
from codec.vq import EMACodebook, FactorizedCodebook


def clustered_latents(num_clusters: int = 4, dim: int = 8, batch: int = 4, frames: int = 64, noise: float = 0.01):
    """[B, D, T] points scattered by `noise` around `num_clusters` centres [num_clusters, D] drawn at scale 10."""
    centres = 10 * torch.randn(num_clusters, dim)
    points = centres[torch.randint(0, num_clusters, (batch, frames))] + noise * torch.randn(batch, frames, dim)
    return points.permute(0, 2, 1), centres


def ema_codebook(**overrides) -> EMACodebook:
    arguments = dict(
        dim=8, codebook_size=16, ema_decay=0.99, kmeans_iters=10, dead_code_threshold=0.0, dead_code_mode="count"
    )
    return EMACodebook(**(arguments | overrides)).train()


def test_kmeans_init_places_every_code_on_the_data():
    latents, centres = clustered_latents()
    codebook = ema_codebook()
    distance_to_centres = lambda: torch.cdist(codebook.codebook, centres)  # [card, clusters]
    assert distance_to_centres().min(dim=1).values.max() > 1.0  # random start: codes are off the data
    output = codebook(latents)
    assert bool(codebook.initialized)
    assert distance_to_centres().min(dim=1).values.max() < 0.1  # every code sits on a cluster
    assert distance_to_centres().min(dim=0).values.max() < 0.1  # every cluster has a code
    assert output.commit_loss.max() < 1e-3
    assert codebook.usage.sum() == latents.shape[0] * latents.shape[2]


def test_ema_moves_codes_towards_their_vectors():
    latents, centres = clustered_latents()
    codebook = ema_codebook(codebook_size=4, ema_decay=0.5)
    counts = torch.bincount(torch.cdist(latents.permute(0, 2, 1).reshape(-1, 8), centres).argmin(1), minlength=4)
    codebook.codebook.copy_(centres)  # as if initialised on these clusters
    codebook.usage.copy_(counts)
    codebook.code_sum.copy_(centres * counts[:, None])
    codebook.initialized.fill_(True)
    codebook(latents + 1.0)
    # decay 0.5: each code moves half-way to the mean of its vectors, which moved by +1
    torch.testing.assert_close(codebook.codebook, centres + 0.5, atol=0.01, rtol=0)


def test_dead_code_threshold_kinds():
    codebook = ema_codebook(dead_code_threshold=1.0, dead_code_mode="count")
    codebook.usage.copy_(torch.tensor([0.5] + [5.0] * 15))  # uniform share = (0.5 + 75) / 16 = 4.7
    assert codebook.dead_codes().tolist() == [True] + [False] * 15
    codebook.dead_code_mode = "uniform_fraction"  # 1.0 x uniform: every code below 4.7 is dead
    assert codebook.dead_codes().tolist() == [True] + [False] * 15
    codebook.dead_code_threshold = 0.05  # 0.05 x 4.7 = 0.24 < 0.5
    assert not codebook.dead_codes().any()
    codebook.usage.mul_(100)  # the fraction is scale free, the count is not
    codebook.dead_code_mode, codebook.dead_code_threshold = "count", 1.0
    assert not codebook.dead_codes().any()


@pytest.mark.parametrize("mode,threshold", [("count", 1.0), ("uniform_fraction", 0.1)])
@pytest.mark.parametrize("lookup", ["ema", "factorized"])
def test_dead_codes_are_restarted_onto_batch_vectors(lookup, mode, threshold):
    latents, _ = clustered_latents(dim=8)
    if lookup == "ema":
        codebook = ema_codebook(dead_code_threshold=threshold, dead_code_mode=mode)
    else:
        codebook = FactorizedCodebook(8, 4, 16, ema_decay=0.99, dead_code_threshold=threshold, dead_code_mode=mode)
        codebook.train()
    codebook(latents)
    table = codebook.codebook if lookup == "ema" else codebook.codebook.data
    table[:4] = 1000.0  # four codes far from everything: never chosen again
    codebook.usage[:4] = 0.0
    codebook(latents)
    vectors = latents if lookup == "ema" else codebook.in_proj(latents).detach()
    vectors = vectors.permute(0, 2, 1).reshape(-1, vectors.shape[1])
    restarted = table[:4]
    assert torch.cdist(restarted, vectors).min(dim=1).values.max() < 1e-5  # each restarted code is a batch vector
    assert not codebook.dead_codes()[:4].any()  # given the uniform usage, not expired again at once


def test_without_threshold_dead_codes_stay():
    latents, _ = clustered_latents()
    codebook = ema_codebook(dead_code_threshold=0.0)
    codebook(latents)
    codebook.codebook[:4] = 1000.0
    codebook.code_sum[:4] = 1000.0 * codebook.usage[:4, None]
    codebook(latents)
    assert torch.all(codebook.codebook[:4] > 999)


def rvq(**overrides) -> ResidualVectorQuantizer:
    config = QuantizerConfig(**(dict(num_codebooks=4, codebook_size=16, kmeans_iters=10) | overrides))
    return ResidualVectorQuantizer(8, config)


def test_error_falls_as_codebooks_are_added():
    quantizer = rvq(num_codebooks=6).train()
    latents = torch.randn(4, 8, 128)
    for _ in range(3):
        quantizer(latents)
    quantizer.eval()
    errors = [
        (quantizer.decode(quantizer.encode(latents, num_codebooks=k)) - latents).pow(2).mean().item()
        for k in range(1, 7)
    ]
    assert all(later < 0.9 * earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * latents.pow(2).mean().item()


def test_forward_quantized_equals_decoded_codes():
    quantizer = rvq().train()
    latents = torch.randn(2, 8, 32)
    quantizer(latents)
    quantizer.eval()
    output = quantizer(latents)
    torch.testing.assert_close(output.quantized, quantizer.decode(output.codes), atol=1e-5, rtol=0)
    assert torch.equal(output.codes, quantizer.encode(latents))
    assert output.codes.dtype == torch.long and output.codes.shape == (2, 4, 32)


def test_dropout_varies_depth_per_item():
    quantizer = rvq(dropout=1.0).train()
    latents = torch.randn(64, 8, 16)
    quantizer(latents)  # k-means init
    before_update = copy.deepcopy(quantizer)  # forward uses the codebooks as they were before its EMA step
    output = quantizer(latents)
    assert output.depth.min() >= 1 and output.depth.max() <= 4
    assert len(output.depth.unique()) == 4  # 64 items, each depth drawn from {1..4}
    for item in range(8):
        depth = int(output.depth[item])
        expected = before_update.decode(output.codes[item : item + 1, :depth])
        torch.testing.assert_close(output.quantized[item : item + 1], expected, atol=1e-5, rtol=0)
    half = rvq(dropout=0.5).train()(latents).depth
    assert 16 <= int((half < 4).sum()) <= 40  # ~ 0.5 * 3/4 of 64 = 24 items lose codebooks
    assert torch.all(rvq(dropout=1.0).eval()(latents).depth == 4)  # never at inference


def test_straight_through_gradient_is_identity():
    quantizer = rvq().train()
    latents = torch.randn(2, 8, 32, requires_grad=True)
    upstream = torch.randn(2, 8, 32)
    (quantizer(latents).quantized * upstream).sum().backward()
    torch.testing.assert_close(latents.grad, upstream)


def test_factorized_codebook_learns_by_gradient():
    quantizer = rvq(lookup="factorized", codebook_dim=4).train()
    assert sum(codebook.codebook.requires_grad for codebook in quantizer.codebooks) == 4
    output = quantizer(torch.randn(2, 8, 32))
    output.codebook_loss.backward()
    assert quantizer.codebooks[0].codebook.grad.abs().sum() > 0
    ema = rvq().train()
    assert not any(parameter.requires_grad for parameter in ema.parameters())  # EMA codebooks are buffers
    assert ema(torch.randn(2, 8, 32)).codebook_loss == 0


def test_bandwidth_to_num_codebooks():
    codec = Codec(CodecConfig(bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0)))  # EnCodec 24 kHz: 75 Hz x 10 bits
    assert [codec.bandwidth_to_num_codebooks(kbps) for kbps in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    assert codec.bandwidth_to_num_codebooks(2.0) == 2  # rounds down to what fits
    for kbps in (0.5, 24.8):
        with pytest.raises(ValueError, match="bandwidth must be in"):
            codec.bandwidth_to_num_codebooks(kbps)
    with pytest.raises(ValueError, match="bandwidth"):
        Codec(CodecConfig(bandwidths=(48.0,)))
    codes = codec.encode(torch.randn(1, 1, 3200), num_codebooks=codec.bandwidth_to_num_codebooks(6.0))
    assert codes.shape == (1, 8, 10)


def test_usage_stats():
    quantizer = rvq(dead_code_threshold=1.0)
    quantizer.codebooks[0].usage.fill_(3.0)
    quantizer.codebooks[1].usage.copy_(torch.tensor([48.0] + [0.0] * 15))
    stats = quantizer.stats()
    assert stats["codebook_0/entropy_bits"] == pytest.approx(math.log2(16))
    assert stats["codebook_0/dead_codes"] == 0
    assert stats["codebook_1/entropy_bits"] == pytest.approx(0.0, abs=1e-6)
    assert stats["codebook_1/dead_codes"] == 15


def test_quantizer_runs_in_float32_under_mixed_precision():
    quantizer = rvq().train()
    latents = torch.randn(2, 8, 32)
    quantizer(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = quantizer(latents.bfloat16())  # the EMA update would fail on bfloat16 statistics
        codes = quantizer.encode(latents.bfloat16())
    assert output.quantized.dtype == torch.float32
    assert torch.equal(codes, quantizer.encode(latents.bfloat16().float()))
