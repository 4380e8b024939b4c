"""Our metric math against the implementations papers report with: pytorch-fid's FID (scipy's
sqrtm) and the prdc package. Needs the ``test`` extra (scipy, prdc, scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
from prdc import compute_prdc
from scipy import linalg

from facegan.metrics import fid, prdc


def inception_like(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated, low-intrinsic-rank features, like ReLU-pooled Inception activations."""
    mixing = np.random.default_rng(99).standard_normal((64, d)) / 8
    latent = np.random.default_rng(seed).standard_normal((n, 64)) * scale + shift
    return np.maximum(latent @ mixing, 0).astype(np.float32)


def pytorch_fid_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, as published, except that sqrtm is called without
    ``disp=False`` (deprecated in SciPy 1.17, removed in 1.18; it only silenced a message)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("n_real, n_fake", [(600, 500), (100, 80)], ids=["N>D", "N<D (singular covariances)"])
def test_fid_matches_pytorch_fid(n_real, n_fake):
    real = inception_like(n_real, 256, seed=0)
    fake = inception_like(n_fake, 256, seed=1, scale=1.2, shift=0.1)
    (mu1, s1), (mu2, s2) = fid.stats(real), fid.stats(fake)
    expected = pytorch_fid_frechet_distance(mu1, s1, mu2, s2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_prdc_package(k):
    # float64 in: given float32, sklearn returns float32 distances, whose rounding (not the
    # metric) would decide near-ties differently.
    real = inception_like(400, 128, seed=0).astype(np.float64)
    fake = inception_like(300, 128, seed=1, scale=1.3).astype(np.float64)
    expected = compute_prdc(real, fake, nearest_k=k)
    ours = prdc.precision_recall(real, fake, k) | prdc.density_coverage(real, fake, k)
    assert ours == pytest.approx({key: float(v) for key, v in expected.items()}, rel=1e-6)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1  # a comparison that can tell them apart
