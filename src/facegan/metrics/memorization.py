"""Memorization: does the generator hand back (near) copies of its training faces?

For every generated face we find its nearest training face, by Euclidean distance in the same
Inception feature space as FID and precision/recall (and, when pixels are given, by Euclidean
distance between images downscaled to at most 32², where an exact copy is unmistakable).

A generated face counts as a copy when it is closer to a training face than
``COPY_RATIO`` (⅓) × the median real-to-real nearest-neighbour distance, where each real
face's distance is to its nearest *other* real face. Why this threshold:

- it is relative, so the same rule works in feature and pixel space at any scale;
- an ordinary new sample from the real distribution is about as far from the training set
  as a training face is from the rest of it, so it sits near the median, three times above
  the threshold (in d intrinsic dimensions only ≈ ln2·3⁻ᵈ of such samples fall below it);
- exact copies (distance 0) and copies with small changes fall far below it;
- the median, unlike the minimum, is not dragged to 0 by duplicates inside the dataset;
- ⅓ is the ratio Carlini et al. (2023) use to call a generated image a training-set copy.

``mem_fraction`` is in feature space, so it means the same whether or not pixels are passed;
the pixel-space numbers come as ``mem_pixel_*`` extras, and ``closest_pairs.png`` shows the
pairs with the smallest feature distance for a person to judge.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facegan.metrics.prdc import distance_chunks, kth_neighbour_distances
from facegan.viz import grid, save_image

if TYPE_CHECKING:
    from facegan.metrics import MetricInput

COPY_RATIO = 1 / 3
PIXEL_SIZE = 32
TOP_PAIRS = 8


def nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a: the Euclidean distance to its nearest row of b, and that row's index."""
    dist, idx = np.empty(len(a)), np.empty(len(a), np.int64)
    for rows, d in distance_chunks(a, b):
        idx[rows] = d.argmin(axis=1)
        dist[rows] = d[np.arange(d.shape[0]), idx[rows]]
    return dist, idx


def copy_threshold(real: np.ndarray) -> float:
    """COPY_RATIO × median distance from a real sample to its nearest other real sample."""
    return float(COPY_RATIO * np.median(kth_neighbour_distances(real, 1)))


def memorization(real: np.ndarray, fake: np.ndarray) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Fraction of fakes closer to a real sample than the copy threshold, the median
    fake→real nearest-neighbour distance, and the threshold; plus each fake's NN distance/index."""
    threshold = copy_threshold(real)
    dist, idx = nearest(fake, real)
    stats = {"fraction": float((dist < threshold).mean()), "nn_median": float(np.median(dist)),
             "threshold": threshold}
    return stats, dist, idx


def pixels(images: np.ndarray, size: int = PIXEL_SIZE) -> np.ndarray:
    """uint8 (N, H, W, C) → float32 (N, ≤size²·C) vectors, box-downscaled when larger than size².

    Downscaling keeps a copy a copy while making the distance less sensitive to pixel noise
    and the matrix multiplies cheap (32²·3 = 3072 values per face).
    """
    n, h, w, c = images.shape
    if h <= size and w <= size:
        return np.asarray(images, np.float32).reshape(n, -1)
    out = np.empty((n, size, size, c), np.float32)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if c == 1 else np.asarray(img))
        out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BOX), np.float32).reshape(size, size, c)
    return out.reshape(n, -1)


def save_closest_pairs(fake_images: np.ndarray, real_images: np.ndarray, dist: np.ndarray, idx: np.ndarray,
                       path: Path, k: int = TOP_PAIRS) -> Path:
    """The k closest generated/training pairs: generated faces on top, their training faces below."""
    order = np.argsort(dist)[:k]
    pairs = np.concatenate([fake_images[order], real_images[idx[order]]])
    return save_image(grid(pairs, nrow=len(order)), path)


def compute(inp: MetricInput) -> dict[str, float]:
    stats, dist, idx = memorization(inp.real, inp.fake)
    result = {f"mem_{key}": value for key, value in stats.items()}
    if inp.real_images is not None and inp.fake_images is not None:
        pixel_stats, _, _ = memorization(pixels(inp.real_images), pixels(inp.fake_images))
        result.update({f"mem_pixel_{key}": value for key, value in pixel_stats.items()})
        if inp.out_dir is not None:
            save_closest_pairs(inp.fake_images, inp.real_images, dist, idx, Path(inp.out_dir) / "closest_pairs.png")
    return result
