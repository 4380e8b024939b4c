"""Shared fixtures: an isolated dataset cache and a tiny, fast training config."""

from __future__ import annotations

import pytest
import torch

from facegan.config import TrainConfig
from facegan.models.dcgan import ModelConfig

TINY = ModelConfig(res=16, z_dim=8, g_width=8, d_width=8, width_cap=32)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test writes prepared datasets to a private cache, never to ~/.cache."""
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_cfg(tmp_path) -> TrainConfig:
    """16² nets, 128 procedural faces, batch 16: a full run takes about a second on CPU."""
    return TrainConfig(preset="tiny", data="procedural:128", out=str(tmp_path / "run"), batch=16, max_images=16 * 8,
                       log_every=2, sample_every=4, ckpt_every=4, keep=2, grid=4, model=TINY)


def real_state(cfg: TrainConfig, step: int = 1) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) exactly as the training loop checkpoints them, after one real step of ``cfg``'s nets.

    Tests that need a valid checkpoint (to save, load or corrupt) get one without a training run.
    """
    from facegan.models.dcgan import build
    from facegan.train import ema, loop, loss

    torch.manual_seed(cfg.seed)
    G, D = build(cfg.model)
    opt_g, opt_d = loop.optimizers(G, D, cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    real = torch.rand(4, cfg.model.channels, cfg.model.res, cfg.model.res) * 2 - 1
    z = torch.randn(4, cfg.model.z_dim, generator=gen)
    loop.gan_step(G, D, opt_g, opt_d, real, z, loss.d_targets(4, gen, torch.device("cpu")))
    has_ema = ema.schedule(cfg.ema, cfg.ema_kimg, cfg.ema_rampup, cfg.batch) is not None
    G_ema = ema.make(G) if has_ema else None
    return loop._state(step, cfg.batch, cfg, G, D, G_ema, opt_g, opt_d, gen, torch.device("cpu"))
