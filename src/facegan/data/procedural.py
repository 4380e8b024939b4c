"""PLACEHOLDER - being replaced by the procedural face renderer."""
from __future__ import annotations
import numpy as np


def render_faces(n: int, res: int, seed: int = 0, channels: int = 3, start: int = 0) -> np.ndarray:
    out = np.zeros((n, res, res, channels), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, start + i])
        out[i] = rng.integers(0, 256, size=(1, 1, channels), dtype=np.uint8)
    return out
