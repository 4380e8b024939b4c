"""Shared fixtures: an isolated dataset cache and a tiny, fast training config."""

from __future__ import annotations

import pytest

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
