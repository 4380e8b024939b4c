"""Kernel Inception Distance (Bińkowski et al. 2018), as torch-fidelity computes it.

KID is the unbiased estimate of MMD² between the two feature sets under the cubic polynomial
kernel k(x, y) = (x·y / d + 1)³, averaged over ``subsets`` random subsets of ``subset_size``
images from each set (drawn without replacement). Unlike FID it is unbiased, so it does not
favour large sample counts, and the spread over subsets gives an error bar. The per-subset
formula is torch-fidelity's ``mmd2(..., mmd_est='unbiased')``:

    MMD² = (ΣK_XX − tr K_XX + ΣK_YY − tr K_YY) / (m(m−1)) − 2 ΣK_XY / m²

Subsets are drawn with ``np.random.default_rng(seed)`` (real then fake, per subset), so
values are reproducible here but not bit-identical to torch-fidelity's RandomState draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from facegan.errors import FaceganError

if TYPE_CHECKING:
    from facegan.metrics import MetricInput


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x·y / d + 1)³ for all row pairs."""
    k = x @ y.T
    k /= x.shape[1]
    k += 1.0
    return k**3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between equal-size samples x and y (rows), cubic polynomial kernel.

    float64: MMD² is a difference of kernel means of order 1 that is often ~10⁻³, so float32
    would keep only about four correct digits.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = len(x)
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(within / (m * (m - 1)) - 2.0 * polynomial_kernel(x, y).sum() / (m * m))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict[str, float]:
    """Mean and (population) standard deviation of MMD² over random subsets, as torch-fidelity.

    subset_size is clipped to the smaller set, so small evaluations still run (with larger
    error bars) instead of failing as torch-fidelity does.
    """
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise FaceganError(f"KID needs at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    rng = np.random.default_rng(seed)
    mmds = []
    for _ in range(subsets):
        r = real[rng.choice(len(real), m, replace=False)]
        f = fake[rng.choice(len(fake), m, replace=False)]
        mmds.append(mmd2_unbiased(r, f))
    return {"kid_mean": float(np.mean(mmds)), "kid_std": float(np.std(mmds))}


def compute(inp: MetricInput) -> dict[str, float]:
    return kid(inp.real, inp.fake, seed=inp.seed)
