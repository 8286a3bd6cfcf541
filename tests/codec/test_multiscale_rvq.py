"""Multi-scale residual VQ: each codebook quantizes the residual pooled at its stride, against a reference written
out in the test, and the code layout, round trip and training of that layout."""

import pytest
import torch
import torch.nn.functional as F

from codec.multiscale_rvq import MultiScaleQuantizerConfig, MultiScaleResidualVectorQuantizer


def make_quantizer(strides=(4, 2, 1), dim=16, codebook_size=32, codebook_dim=4) -> MultiScaleResidualVectorQuantizer:
    torch.manual_seed(0)
    config = MultiScaleQuantizerConfig(strides=strides, codebook_size=codebook_size, codebook_dim=codebook_dim)
    return MultiScaleResidualVectorQuantizer(dim, config).eval()


def reference_encode(quantizer: MultiScaleResidualVectorQuantizer, latents: torch.Tensor) -> list[torch.Tensor]:
    """SNAC's algorithm spelled out: average the residual over `stride` frames, project, cosine nearest code,
    project back, repeat each code vector `stride` times, subtract."""
    residual, codes = latents, []
    for stride, codebook in zip(quantizer.strides, quantizer.codebooks):
        pooled = residual.unfold(-1, stride, stride).mean(-1)  # [B, D, T / stride]
        projected = F.normalize(codebook.in_proj(pooled).transpose(1, 2), dim=-1)  # [B, T / stride, d]
        level_codes = (projected @ F.normalize(codebook.codebook, dim=-1).t()).argmax(-1)  # [B, T / stride]
        vectors = codebook.out_proj(codebook.codebook[level_codes].transpose(1, 2))  # [B, D, T / stride]
        residual = residual - torch.repeat_interleave(vectors, stride, dim=-1)
        codes.append(level_codes)
    return codes


@pytest.mark.parametrize("strides", [(4, 2, 1), (8, 4, 2, 1), (3, 1), (2, 3)])
def test_each_codebook_codes_the_residual_pooled_at_its_stride(strides):
    quantizer = make_quantizer(strides)
    T = 24
    latents = torch.randn(2, 16, T)
    with torch.no_grad():
        codes = quantizer.encode(latents)
        expected = reference_encode(quantizer, latents)
    assert [tuple(level.shape) for level in codes] == [(2, T // stride) for stride in strides]
    for level, reference in zip(codes, expected):
        assert torch.equal(level, reference)
        assert level.unique().numel() > 3  # the codes vary: a real comparison


def test_strides_4_2_1_give_codes_of_a_quarter_a_half_and_the_full_length():
    quantizer = make_quantizer((4, 2, 1))
    codes = quantizer.encode(torch.randn(3, 16, 40))
    assert [level.shape[-1] for level in codes] == [10, 20, 40]


def test_forward_encode_and_decode_agree():
    """The training pass's codes are `encode`'s, and its quantized latent is `decode` of them (eval: no restart)."""
    quantizer = make_quantizer()
    latents = torch.randn(2, 16, 32)
    with torch.no_grad():
        output = quantizer(latents)
        codes = quantizer.encode(latents)
        decoded = quantizer.decode(codes)
    assert all(torch.equal(a, b) for a, b in zip(output.codes, codes))
    torch.testing.assert_close(output.quantized, decoded, atol=1e-6, rtol=0)


def test_a_code_covers_exactly_its_stride_of_latent_frames():
    """Changing code j of the level with stride s changes the decoded frames [j * s, (j + 1) * s) and no other."""
    quantizer = make_quantizer((4, 2, 1))
    codes = quantizer.encode(torch.randn(1, 16, 16))
    with torch.no_grad():
        reference = quantizer.decode(codes)
        for k, stride in enumerate(quantizer.strides):
            changed = [level.clone() for level in codes]
            changed[k][0, 1] = (changed[k][0, 1] + 1) % 32
            difference = (quantizer.decode(changed) - reference).abs().amax(dim=(0, 1))  # [T]
            assert torch.equal(difference > 0, (torch.arange(16) >= stride) & (torch.arange(16) < 2 * stride))


def test_losses_are_the_per_level_distances_at_the_pooled_rate():
    quantizer = make_quantizer((4, 2, 1))
    latents = torch.randn(2, 16, 16)
    with torch.no_grad():
        output = quantizer(latents)
        residual, expected = latents, torch.zeros(())
        for stride, codebook, level_codes in zip(quantizer.strides, quantizer.codebooks, output.codes):
            projected = codebook.in_proj(F.avg_pool1d(residual, stride))
            expected = expected + (projected - codebook.codebook[level_codes].transpose(1, 2)).pow(2).mean()
            residual = residual - codebook.decode(level_codes).repeat_interleave(stride, dim=-1)
    torch.testing.assert_close(output.commit_loss, expected)
    torch.testing.assert_close(output.codebook_loss, expected)


def test_training_the_codebooks_lowers_the_quantization_error():
    """50 Adam steps on the codebook and commitment losses, latents fixed: the error of the decoded latent falls."""
    quantizer = make_quantizer((4, 2, 1)).train()
    latents = torch.randn(4, 16, 32)
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)

    def error() -> float:
        with torch.no_grad():
            return float((quantizer.decode(quantizer.encode(latents)) - latents).pow(2).mean())

    before = error()
    for _ in range(50):
        output = quantizer(latents)
        loss = (output.quantized - latents).pow(2).mean() + output.codebook_loss + 0.25 * output.commit_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert error() < 0.8 * before


def test_bad_lengths_and_codes_are_refused_by_name():
    quantizer = make_quantizer((4, 2, 1))
    with pytest.raises(ValueError, match="multiple of 4"):
        quantizer.encode(torch.randn(1, 16, 10))
    with pytest.raises(ValueError, match="multiple of 4"):
        quantizer(torch.randn(1, 16, 6))
    codes = quantizer.encode(torch.randn(1, 16, 8))
    with pytest.raises(ValueError, match="list of 3 tensors"):
        quantizer.decode(codes[:2])
    with pytest.raises(ValueError, match=r"need \[\(1, 2\), \(1, 4\), \(1, 8\)\]"):
        quantizer.decode([codes[0], codes[1], codes[2][:, :6]])
    with pytest.raises(ValueError, match=r"codes\[1\] must be in \[0, 32\)"):
        quantizer.decode([codes[0], codes[1] + 32, codes[2]])
    with pytest.raises(ValueError, match="strides must be"):
        MultiScaleQuantizerConfig(strides=(4, 0))
