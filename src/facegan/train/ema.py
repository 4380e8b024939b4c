"""Exponential moving average of G's weights, with BatchNorm statistics recomputed for it.

Why: GAN weights oscillate around a good solution; their running average sits closer to it, and
its faces are smoother and more stable (Yazıcı et al. 2019; StyleGAN's G_ema). A DCGAN generator
has BatchNorm, whose running mean/variance were collected for the *live* weights, not the
averaged ones — using them with EMA weights gives washed-out or saturated faces. So before the
EMA generator is used (grids, evaluation, checkpoints), its BN statistics are recomputed from a
fixed set of latents (as SWA's ``update_bn`` does). Those latents are fixed per run, so the
result is deterministic and resume stays exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from facegan.models.dcgan import Generator, latents


def make(G: Generator) -> Generator:
    """A frozen copy of G to average into, in eval mode (it is only ever sampled from)."""
    ema = copy.deepcopy(G).eval()
    ema.requires_grad_(False)
    return ema


def decay_at(step: int, target: float) -> float:
    """``target``, ramped up over the first steps so early EMA is not anchored to the random init."""
    return min(target, (1 + step) / (10 + step))


def half_life_decay(images: int, images_per_step: int, kimg: float, rampup: float) -> float:
    """Per-step decay for an EMA whose half-life is ``kimg`` thousand images (StyleGAN's form).

    Stated in images rather than steps, the average spans the same stretch of training whatever
    the batch size. With ``rampup`` r > 0 the half-life is at most r × the images seen so far, so
    early on the average forgets the random init quickly and never lags far behind G.
    """
    half_life = kimg * 1000 if rampup <= 0 else min(kimg * 1000, rampup * max(images, 1))
    return 0.5 ** (images_per_step / max(half_life, 1e-8))


def schedule(per_step_decay: float, kimg: float, rampup: float, images_per_step: int) -> Callable[[int], float] | None:
    """The run's EMA decay as a function of the step, from whichever form the config gives
    (``--ema`` per step, or ``--ema-kimg`` half-life); None when the run keeps no EMA."""
    if per_step_decay > 0:
        return lambda step: decay_at(step, per_step_decay)
    if kimg > 0:
        return lambda step: half_life_decay(step * images_per_step, images_per_step, kimg, rampup)
    return None


@torch.no_grad()
def update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1−decay)·model, parameters only (buffers are recalibrated instead)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


@torch.no_grad()
def recalibrate_bn(G: Generator, seed: int, n: int = 1024, batch: int = 128) -> Generator:
    """Recompute G's BatchNorm running statistics as the exact average over ``n`` fixed latents."""
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return G
    was_training = G.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    device = next(G.parameters()).device
    G.train()
    for s in range(0, n, batch):
        G(latents(min(batch, n - s), G.cfg.z_dim, seed, s).to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    G.train(was_training)
    return G
