"""Fréchet distance between two sets of embeddings (the FID / FAD statistic, Heusel et al. 2017, eq. 6).

Each set is summarised by a Gaussian (mean mu, covariance Sigma); the distance is
    |mu_1 - mu_2|^2 + tr(Sigma_1) + tr(Sigma_2) - 2 tr((Sigma_1 Sigma_2)^(1/2)).
tr((Sigma_1 Sigma_2)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric positive
semi-definite matrix Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2) (same spectrum as Sigma_1 Sigma_2), so two symmetric
eigendecompositions (eigh) replace a general matrix square root. Computed in float64.
"""
import torch
from torch import Tensor


def gaussian_statistics(embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """embeddings [N, E] -> (mean [E], covariance [E, E]) in float64 (unbiased; zero covariance when N = 1)."""
    N, E = embeddings.shape
    embeddings = embeddings.double()
    mean = embeddings.mean(dim=0)
    if N < 2:
        return mean, torch.zeros(E, E, dtype=torch.float64)
    return mean, torch.cov(embeddings.T)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix; round-off negatives are clipped to 0."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(mean_1: Tensor, covariance_1: Tensor, mean_2: Tensor, covariance_2: Tensor) -> float:
    """Fréchet distance of N(mean_1, covariance_1) and N(mean_2, covariance_2). means [E], covariances [E, E]."""
    root_1 = _psd_sqrt(covariance_1)
    product = root_1 @ covariance_2 @ root_1
    cross_trace = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_1 - mean_2).square().sum() + covariance_1.trace() + covariance_2.trace() - 2 * cross_trace
    return max(0.0, float(distance))


def frechet_distance_of_sets(embeddings_1: Tensor, embeddings_2: Tensor) -> float:
    """[N1, E], [N2, E] -> the Fréchet distance of their Gaussian fits."""
    if embeddings_1.shape[1] != embeddings_2.shape[1]:
        raise ValueError(f"embedding sizes differ: {embeddings_1.shape[1]} vs {embeddings_2.shape[1]}")
    return frechet_distance(*gaussian_statistics(embeddings_1), *gaussian_statistics(embeddings_2))
