"""How real the faces are: metrics over Inception features, face-space features and pixels, behind one registry.

Each metric is a small module with a ``compute(MetricInput) -> dict[str, float]``; the registry
maps the names users type (``--metrics fid,kid``) to them and says what each needs — Inception
features, the images — so a caller runs Inception only when a metric reads it. Adding a metric
is one module and one line here.

Why metrics outside ImageNet's feature space (``faces``, ``fd_face``, ``swd``): a discriminator
that looks through ImageNet features (``--d-arch projected``) can lower FID, which is measured in
ImageNet features too, without making better faces (Kynkäänniemi et al., ICLR 2023). A face
detector, a face-identity network and raw pixels cannot be flattered that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facegan.errors import FaceganError
from facegan.metrics import face_detect, fd_face, fid, kid, memorization, prdc, swd


@dataclass
class MetricInput:
    """Everything a metric may look at.

    real / fake: (N, D) and (M, D) Inception features of the real (training) set and of generated
        images (None when no requested metric reads them).
    real_images / fake_images: uint8 (N, H, W, C) pixels, for the metrics that read pixels (else None).
    out_dir: where metrics that draw pictures save them (None = draw nothing).
    seed: for metrics that subsample (KID, SWD), so a result is reproducible.
    memo: what a metric derives from the real set alone (its face embeddings, its detection rate),
        kept by the caller across evaluations against the same real set; keys are metric names.
    """

    real: np.ndarray | None = None
    fake: np.ndarray | None = None
    real_images: np.ndarray | None = None
    fake_images: np.ndarray | None = None
    out_dir: Path | None = None
    seed: int = 0
    memo: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A registered metric: what computes it and what it reads."""

    compute: Callable[[MetricInput], dict[str, float]]
    inception: bool = True  # reads real / fake Inception features
    pixels: bool = False  # reads real_images / fake_images (mem: optionally, for its pixel-space extras)


METRICS: dict[str, Metric] = {
    "fid": Metric(fid.compute),
    "kid": Metric(kid.compute),
    "pr": Metric(prdc.compute_pr),
    "dc": Metric(prdc.compute_dc),
    "mem": Metric(memorization.compute, pixels=True),
    "faces": Metric(face_detect.compute, inception=False, pixels=True),
    "fd_face": Metric(fd_face.compute, inception=False, pixels=True),
    "swd": Metric(swd.compute, inception=False, pixels=True),
}


def check(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names, or a one-line error for an unknown one (checked before any slow work)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise FaceganError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}")
    return list(names)


def parse(text: str) -> list[str]:
    """A comma-separated list as users type it (``--metrics fid,kid``), checked."""
    return check([n.strip() for n in text.split(",") if n.strip()])


def need_inception(names: list[str] | tuple[str, ...]) -> bool:
    return any(METRICS[n].inception for n in names)


def need_pixels(names: list[str] | tuple[str, ...]) -> bool:
    return any(METRICS[n].pixels for n in names)


def compute(names: list[str], inp: MetricInput) -> dict[str, float]:
    """Run the named metrics on ``inp`` and merge their results into one dict."""
    check(names)
    if need_inception(names) and (inp.real is None or inp.fake is None or inp.real.ndim != 2 or inp.fake.ndim != 2
                                  or inp.real.shape[1] != inp.fake.shape[1]):
        raise FaceganError(f"real and fake features must be (N, D) with the same D, got "
                           f"{getattr(inp.real, 'shape', None)} and {getattr(inp.fake, 'shape', None)}")
    result: dict[str, float] = {}
    for name in names:
        result.update(METRICS[name].compute(inp))
    return result
