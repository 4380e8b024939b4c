"""swd: sliced Wasserstein distance between patches of a Laplacian pyramid (Karras et al., ProGAN, 2018).

A check that needs no network at all: at each level of each image's Laplacian pyramid (from
the full resolution down to 16×16), take ``PATCHES`` random 7×7 neighbourhoods, normalise each
colour channel over the whole set, and compare the real and generated patch distributions by the
sliced Wasserstein distance: the mean, over ``REPEATS`` × ``DIRECTIONS`` random unit directions,
of the 1-D Wasserstein distance between the two sets' projections (sorted projections,
subtracted). Fine levels judge texture and edges, coarse ones colour and layout. ProGAN's
settings and units: reported ×10³ per level (``swd_64`` …) and averaged (``swd``).

Patch positions and directions come from ``seed``, the same for both sets, so identical sets
give exactly 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from facegan.errors import FaceganError

if TYPE_CHECKING:
    from facegan.metrics import MetricInput

PATCH = 7
PATCHES = 128  # neighbourhoods per image and level
REPEATS = 4
DIRECTIONS = 128
MIN_RES = 16
SCALE = 1e3
CHUNK = 256  # images per pyramid pass
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5-tap binomial filter, reflected edges (ProGAN's pyramid kernel)."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(images: np.ndarray) -> list[torch.Tensor]:
    """uint8 (N, H, W, C) → float32 NCHW levels, finest first: band-pass levels, then the coarsest
    Gaussian level at MIN_RES."""
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float()  # a copy: memmaps are read-only
    levels = []
    while x.shape[-1] > MIN_RES:
        small = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = small * 4  # zero-insertion upsampling, then the same blur
        levels.append(x - _blur(up))
        x = small
    levels.append(x)
    return levels


def patches(level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """PATCHES random PATCH×PATCH neighbourhoods per image of one level: (N·PATCHES, 7, 7, C)."""
    n, c, h, w = level.shape
    half = PATCH // 2
    ys = torch.from_numpy(rng.integers(half, h - half, size=n * PATCHES))
    xs = torch.from_numpy(rng.integers(half, w - half, size=n * PATCHES))
    img = torch.arange(n).repeat_interleave(PATCHES)
    off = torch.arange(-half, half + 1)
    rows = (ys[:, None] + off)[:, :, None]  # (M, 7, 1)
    cols = (xs[:, None] + off)[:, None, :]  # (M, 1, 7)
    return level.permute(0, 2, 3, 1)[img[:, None, None], rows, cols]


def descriptors(images: np.ndarray, level: int, seed: int) -> np.ndarray:
    """Level ``level``'s patches of every image, each channel normalised over the set: (N·PATCHES, C·PATCH²).

    The pyramid is built CHUNK images at a time and only the patches are kept, so memory grows with
    the patches (75 KB an image and level for RGB), not with whole float pyramids.
    """
    rng = np.random.default_rng([seed, level])
    d = torch.cat([patches(laplacian_pyramid(images[s:s + CHUNK])[level], rng) for s in range(0, len(images), CHUNK)])
    d = d - d.mean(dim=(0, 1, 2), keepdim=True)
    d = d / d.std(dim=(0, 1, 2), keepdim=True).clamp_min(1e-8)
    return d.reshape(len(d), -1).numpy()


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """Mean 1-D Wasserstein distance along REPEATS × DIRECTIONS random unit directions (equal-size sets)."""
    results = []
    for _ in range(REPEATS):
        dirs = rng.standard_normal((a.shape[1], DIRECTIONS)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        results.append(float(np.abs(pa - pb).mean()))
    return float(np.mean(results))


def swd(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, float]:
    """SWD ×10³ per pyramid level (``swd_<side>``) and their mean (``swd``), on equal numbers of images."""
    if real.shape[1:] != fake.shape[1:]:
        raise FaceganError(f"swd needs real and generated images of one shape, got {real.shape[1:]} and {fake.shape[1:]}")
    if min(real.shape[1:3]) < MIN_RES:
        raise FaceganError(f"swd needs images of at least {MIN_RES}² pixels, got {real.shape[1]}×{real.shape[2]}")
    n = min(len(real), len(fake))  # sorted projections are compared element by element
    real, fake = _spaced(real, n), _spaced(fake, n)
    out = {}
    for level, side in enumerate(sides(real.shape[1])):
        da, db = descriptors(real, level, seed), descriptors(fake, level, seed)
        out[f"swd_{side}"] = SCALE * sliced_wasserstein(da, db, np.random.default_rng([seed, level, 1]))
    out["swd"] = float(np.mean(list(out.values())))
    return out


def _spaced(images: np.ndarray, n: int) -> np.ndarray:
    """n evenly spaced images of a set, not its first n: image sets often come sorted (by age, identity)."""
    return images if len(images) == n else images[np.arange(n) * len(images) // n]


def sides(res: int) -> list[int]:
    """The pyramid's level sides for images of side ``res``: res, res/2, … down to MIN_RES."""
    out = [res]
    while out[-1] > MIN_RES:
        out.append(out[-1] // 2)
    return out


def compute(inp: MetricInput) -> dict[str, float]:
    if inp.real_images is None or inp.fake_images is None:
        raise FaceganError("swd needs the real and generated images")
    return swd(np.asarray(inp.real_images), np.asarray(inp.fake_images), inp.seed)
