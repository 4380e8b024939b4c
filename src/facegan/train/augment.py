"""Differentiable augmentation for D (DiffAugment, Zhao et al. 2020), seeded for exact resume.

Why: on the few-thousand-to-tens-of-thousands face sets most users have, D memorises the real
images and its feedback to G degrades. Augmenting *both* real and fake images — with operations
differentiable w.r.t. the image, so G's gradient flows through them — keeps D from overfitting
while G still learns the un-augmented distribution (the augmentations are not "leaked" because D
never sees an un-augmented image of either kind).

Policies follow the paper's code: ``color`` (brightness ±0.5, saturation ×[0, 2], contrast
×[0.5, 1.5]), ``translation`` (integer shift up to 1/8 of the side, zero padding), ``cutout``
(a zeroed square of half the side). All randomness comes from the trainer's generator, so a
resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facegan.config import POLICIES, parse_policy  # noqa: F401 - the names are the option table's


@dataclass(frozen=True)
class Rows:
    """Draw for rows lo … lo+B−1 of a global batch of ``total``: every draw is made for all ``total``
    rows and sliced, so a rank's images get the parameters they would get in one process."""

    gen: torch.Generator
    lo: int
    total: int


Draws = torch.Generator | Rows | None


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: Draws = None) -> torch.Tensor:
    """Augment a (B, C, H, W) batch in [−1, 1]; each image draws its own parameters."""
    for p in policy:
        x = _OPS[p](x, gen)
    return x


def _rand(x: torch.Tensor, gen: Draws, *shape: int) -> torch.Tensor:
    n, lo = x.shape[0], 0
    if isinstance(gen, Rows):
        n, lo, gen = gen.total, gen.lo, gen.gen
    r = torch.rand(n, *shape, generator=gen, device=x.device, dtype=torch.float32)
    return r[lo : lo + x.shape[0]].to(x.dtype)


def color(x: torch.Tensor, gen: Draws) -> torch.Tensor:
    x = x + (_rand(x, gen, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, gen, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, gen: Draws, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by an integer offset in [−s, s] (s = ratio·side), filling with zeros."""
    B, _, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    ty = (_rand(x, gen).float() * (2 * sy + 1)).long().clamp(max=2 * sy) - sy
    tx = (_rand(x, gen).float() * (2 * sx + 1)).long().clamp(max=2 * sx) - sx
    rows = (torch.arange(H, device=x.device)[None, :] - ty[:, None]).clamp(-1, H)  # source row of each output row
    cols = (torch.arange(W, device=x.device)[None, :] - tx[:, None]).clamp(-1, W)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # index −1 / H land on the zero border
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None] + 1, cols[:, None, :] + 1]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: Draws, ratio: float = 0.5) -> torch.Tensor:
    """Zero one (ratio·H)×(ratio·W) square per image, centred anywhere (clipped at the border)."""
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = (_rand(x, gen).float() * (H + 1 - ch % 2)).long()
    cx = (_rand(x, gen).float() * (W + 1 - cw % 2)).long()
    ys = torch.arange(H, device=x.device)[None, :]
    xs = torch.arange(W, device=x.device)[None, :]
    in_y = (ys >= (cy - ch // 2)[:, None]) & (ys < (cy - ch // 2 + ch)[:, None])
    in_x = (xs >= (cx - cw // 2)[:, None]) & (xs < (cx - cw // 2 + cw)[:, None])
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}
