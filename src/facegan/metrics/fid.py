"""Fréchet Inception Distance (Heusel et al. 2017), without scipy.

FID = ||μ1 − μ2||² + Tr Σ1 + Tr Σ2 − 2 Tr sqrtm(Σ1 Σ2). Only the *trace* of the matrix square
root is needed, and Σ1 Σ2 is similar to the symmetric PSD matrix S Σ2 S with S = Σ1^½
(S Σ2 S = S (Σ1 Σ2) S⁻¹ where S is invertible, and the limit otherwise), so
Tr sqrtm(Σ1 Σ2) = Σ √λᵢ(S Σ2 S). Two symmetric eigendecompositions (``eigh``) replace scipy's
general ``sqrtm``: they are faster, never produce complex parts, and stay defined when the
covariances are singular (fewer samples than dimensions), where pytorch-fid has to add an
ε·I offset and retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from facegan.errors import FaceganError

if TYPE_CHECKING:
    from facegan.metrics import MetricInput


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64.

    float64 because FID subtracts traces of order 10²–10³ to get values that may be ≲ 1;
    float32 covariances would lose the answer's leading digits.
    """
    if len(feats) < 2:
        raise FaceganError(f"FID needs at least 2 images per set, got {len(feats)}")
    x = np.asarray(feats, np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _without_noise(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, those at rounding-noise level set to exactly 0.

    Rounding leaves a true zero eigenvalue at about ±max·eps; its square root (≈1e-8·√max)
    is not small, and covariances of N < D samples have D − N + 1 of them, so they would add
    a visible bias to the trace. The cut-off max·D·eps is numpy's ``matrix_rank`` tolerance.
    """
    return np.where(w > w.max() * len(w) * np.finfo(np.float64).eps, w, 0.0)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrtm(Σ1 Σ2) for symmetric PSD Σ1, Σ2, via the eigenvalues of Σ1^½ Σ2 Σ1^½."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(_without_noise(w))) @ v.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(_without_noise(np.linalg.eigvalsh((m + m.T) / 2))).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def compute(inp: MetricInput) -> dict[str, float]:
    return {"fid": frechet_distance(*stats(inp.real), *stats(inp.fake))}
