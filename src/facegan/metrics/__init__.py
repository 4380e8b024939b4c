"""How real the faces are: metrics over Inception features (and pixels), behind one registry.

Each metric is a small pure-numpy module with a ``compute(MetricInput) -> dict[str, float]``;
the registry maps the names users type (``--metrics fid,kid``) to them, so adding a metric is
one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegan.errors import FaceganError
from facegan.metrics import fid, kid, memorization, prdc


@dataclass
class MetricInput:
    """Everything a metric may look at.

    real / fake: (N, D) and (M, D) features of the real (training) set and of generated images.
    real_images / fake_images: uint8 (N, H, W, C) pixels, only needed by "mem" (else None).
    out_dir: where metrics that draw pictures save them (None = draw nothing).
    seed: for metrics that subsample (KID), so a result is reproducible.
    """

    real: np.ndarray
    fake: np.ndarray
    real_images: np.ndarray | None = None
    fake_images: np.ndarray | None = None
    out_dir: Path | None = None
    seed: int = 0


METRICS: dict[str, Callable[[MetricInput], dict[str, float]]] = {
    "fid": fid.compute,
    "kid": kid.compute,
    "pr": prdc.compute_pr,
    "dc": prdc.compute_dc,
    "mem": memorization.compute,
}


def compute(names: list[str], inp: MetricInput) -> dict[str, float]:
    """Run the named metrics on ``inp`` and merge their results into one dict."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise FaceganError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if inp.real.ndim != 2 or inp.fake.ndim != 2 or inp.real.shape[1] != inp.fake.shape[1]:
        raise FaceganError(f"real and fake features must be (N, D) with the same D, got {inp.real.shape} "
                           f"and {inp.fake.shape}")
    result: dict[str, float] = {}
    for name in names:
        result.update(METRICS[name](inp))
    return result
