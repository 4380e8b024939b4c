"""Precision & recall (Kynkäänniemi et al. 2019) and density & coverage (Naeem et al. 2020).

All four ask whether samples fall inside k-nearest-neighbour balls: the ball around a sample
has radius = distance to its k-th nearest *other* sample of the same set.

- precision: fraction of fakes inside some real ball  (are the faces realistic?)
- recall:    fraction of reals inside some fake ball  (is the variety of real faces covered?)
- density:   mean number of real balls containing a fake, divided by k (≈1 for a matching
             distribution; rewards fakes in dense real regions, is not capped at 1)
- coverage:  fraction of real balls that contain at least one fake (recall that an outlier
             fake cannot inflate)

k = 3 for precision/recall (Kynkäänniemi et al.'s choice) and k = 5 for density/coverage
(Naeem et al.'s); the ``prdc`` package uses one ``nearest_k`` (default 5) for all four, and
these functions give its numbers when called with its k. Distances are Euclidean.

Full N×M distance matrices do not fit in memory at 10k images (800 MB each in float64), so
distances are streamed in row blocks of at most ``MAX_CHUNK_BYTES`` and reduced on the fly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from facegan.errors import FaceganError

if TYPE_CHECKING:
    from facegan.metrics import MetricInput

MAX_CHUNK_BYTES = 256 * 2**20
PR_K = 3
DC_K = 5


def distance_chunks(a: np.ndarray, b: np.ndarray, max_bytes: int = MAX_CHUNK_BYTES
                    ) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows, D) with D[i, j] = ||a[rows][i] − b[j]||, in row blocks of ≤ max_bytes.

    Computed as ||a||² + ||b||² − 2a·b so each block is one matrix multiply. In float64:
    that expansion cancels catastrophically for near neighbours (the very distances these
    metrics threshold), and float32 would lose about half the significant digits there.
    """
    b = np.asarray(b, np.float64)
    b_sq = np.einsum("ij,ij->i", b, b)
    step = max(1, max_bytes // (8 * len(b)))
    for start in range(0, len(a), step):
        rows = slice(start, min(start + step, len(a)))
        a_rows = np.asarray(a[rows], np.float64)
        d = a_rows @ b.T
        d *= -2.0
        d += np.einsum("ij,ij->i", a_rows, a_rows)[:, None]
        d += b_sq[None, :]
        np.maximum(d, 0.0, out=d)
        yield rows, np.sqrt(d, out=d)


def kth_neighbour_distances(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row (k=1: nearest neighbour).

    The sample itself is excluded by index rather than by skipping the smallest distance, so
    exact duplicates in x count as neighbours at distance ≈ 0 (as in the prdc package).
    """
    if len(x) <= k:
        raise FaceganError(f"a {k}-nearest-neighbour radius needs more than {k} images, got {len(x)}")
    radii = np.empty(len(x))
    for rows, d in distance_chunks(x, x):
        idx = np.arange(d.shape[0])
        d[idx, rows.start + idx] = np.inf
        radii[rows] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K) -> dict[str, float]:
    """Improved precision and recall with k-NN balls (fake inside a real ball, and vice versa)."""
    real_radii, fake_radii = kth_neighbour_distances(real, k), kth_neighbour_distances(fake, k)
    fake_in_real = np.zeros(len(fake), bool)
    real_in_fake = np.zeros(len(real), bool)
    for rows, d in distance_chunks(real, fake):
        fake_in_real |= (d < real_radii[rows, None]).any(axis=0)
        real_in_fake[rows] = (d < fake_radii[None, :]).any(axis=1)
    return {"precision": float(fake_in_real.mean()), "recall": float(real_in_fake.mean())}


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DC_K) -> dict[str, float]:
    """Density and coverage with k-NN balls around the real samples only."""
    real_radii = kth_neighbour_distances(real, k)
    balls_per_fake = np.zeros(len(fake))
    covered = np.zeros(len(real), bool)
    for rows, d in distance_chunks(real, fake):
        inside = d < real_radii[rows, None]
        balls_per_fake += inside.sum(axis=0)
        covered[rows] = inside.any(axis=1)
    return {"density": float(balls_per_fake.mean() / k), "coverage": float(covered.mean())}


def compute_pr(inp: MetricInput) -> dict[str, float]:
    return precision_recall(inp.real, inp.fake)


def compute_dc(inp: MetricInput) -> dict[str, float]:
    return density_coverage(inp.real, inp.fake)
