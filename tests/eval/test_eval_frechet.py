import pytest
import torch
from scipy import linalg

from eval.frechet import frechet_distance, frechet_distance_of_sets, gaussian_statistics


def _random_covariance(size: int, generator: torch.Generator) -> torch.Tensor:
    factor = torch.randn(size, size, generator=generator, dtype=torch.float64)
    return factor @ factor.T / size + 0.1 * torch.eye(size, dtype=torch.float64)


def test_identical_sets_are_at_distance_zero():
    embeddings = torch.randn(50, 8)
    assert frechet_distance_of_sets(embeddings, embeddings.clone()) == pytest.approx(0.0, abs=1e-8)


def test_shifting_a_set_adds_the_squared_shift():
    embeddings = torch.randn(40, 6, dtype=torch.float64)
    distances = [frechet_distance_of_sets(embeddings, embeddings + shift) for shift in (0.5, 1.0, 2.0)]
    assert distances == pytest.approx([6 * 0.25, 6 * 1.0, 6 * 4.0], rel=1e-6)  # |shift * ones(6)|^2


def test_diagonal_gaussians_match_the_closed_form():
    mean_1, mean_2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0],
                                                                                      dtype=torch.float64)
    variances_1, variances_2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = (mean_1 - mean_2).square().sum() + (variances_1.sqrt() - variances_2.sqrt()).square().sum()
    distance = frechet_distance(mean_1, torch.diag(variances_1).double(), mean_2, torch.diag(variances_2).double())
    assert distance == pytest.approx(float(expected), rel=1e-9)  # 1 + 4 + (1 + 1 + 0) = 7
    assert distance == pytest.approx(7.0, rel=1e-9)


def test_full_covariances_match_scipy_sqrtm():
    generator = torch.Generator().manual_seed(0)
    covariance_1, covariance_2 = _random_covariance(5, generator), _random_covariance(5, generator)
    mean_1, mean_2 = torch.randn(5, generator=generator, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    cross = linalg.sqrtm(covariance_1.numpy() @ covariance_2.numpy()).real
    expected = float((mean_1 - mean_2).square().sum() + covariance_1.trace() + covariance_2.trace()) - 2 * cross.trace()
    assert frechet_distance(mean_1, covariance_1, mean_2, covariance_2) == pytest.approx(expected, rel=1e-8)


def test_statistics_of_samples_converge_to_the_gaussian_they_are_drawn_from():
    generator = torch.Generator().manual_seed(1)
    samples = torch.randn(20000, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0]) + 5
    mean, covariance = gaussian_statistics(samples)
    assert torch.allclose(mean, torch.full((3,), 5.0, dtype=torch.float64), atol=0.1)
    assert torch.allclose(covariance.diag(), torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), rtol=0.05)


def test_sets_of_different_widths_are_refused():
    with pytest.raises(ValueError, match="embedding sizes differ"):
        frechet_distance_of_sets(torch.zeros(4, 3), torch.zeros(4, 2))
