"""Fréchet Inception Distance (Heusel et al. 2017), without scipy.

FID = ||μ1 − μ2||² + Tr Σ1 + Tr Σ2 − 2 Tr sqrtm(Σ1 Σ2). Only the *trace* of the matrix square
root is needed, and Σ1 Σ2 is similar to the symmetric PSD matrix S Σ2 S with S = Σ1^½
(S Σ2 S = S (Σ1 Σ2) S⁻¹ where S is invertible, and the limit otherwise), so
Tr sqrtm(Σ1 Σ2) = Σ √λᵢ(S Σ2 S). Two symmetric eigendecompositions (``eigh``) replace scipy's
general ``sqrtm``: they are faster, never produce complex parts, and stay defined when the
covariances are singular (fewer samples than dimensions), where pytorch-fid has to add an
ε·I offset and retry.

From features rather than statistics, and with fewer images than dimensions (the in-training
FID, a quick ``evaluate -n 1000``), a cheaper exact route exists: with centred features A, B
scaled by 1/√(N−1), Σ1 = AᵀA and Σ2 = BᵀB, so Tr sqrtm(Σ1 Σ2) is the sum of the singular values
of the small N1×N2 matrix ABᵀ. It skips both 2048² eigendecompositions (4 s on two CPU cores).
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
    x = _checked(feats)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _checked(feats: np.ndarray) -> np.ndarray:
    if len(feats) < 2:
        raise FaceganError(f"FID needs at least 2 images per set, got {len(feats)}")
    return np.asarray(feats, np.float64)


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


def _scaled_centred(feats: np.ndarray) -> np.ndarray:
    """Features A with AᵀA the unbiased covariance (the rows of ``stats``' Σ before the product)."""
    x = _checked(feats)
    return (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)


def fid_of_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID of two (N, D) feature sets; through the N1×N2 cross product when both N ≤ D."""
    if max(len(real), len(fake)) > np.shape(real)[1]:
        return frechet_distance(*stats(real), *stats(fake))
    a, b = _scaled_centred(real), _scaled_centred(fake)
    diff = _checked(real).mean(axis=0) - _checked(fake).mean(axis=0)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * nuclear)


def compute(inp: MetricInput) -> dict[str, float]:
    return {"fid": fid_of_features(inp.real, inp.fake)}
