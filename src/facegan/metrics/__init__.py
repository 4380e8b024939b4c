"""How real the faces are: metrics over Inception features, face-space features and pixels, behind one registry.

Each metric is a small module with a ``compute(MetricInput) -> dict[str, float]``; the registry
maps the names users type (``--metrics fid,kid``) to them and says what each reads — Inception
features, the images, or outputs paired with their truths (an upscaler's PSNR/SSIM) — what it
reports, and what it is, so a caller runs Inception only when a metric reads it, and the CLI's
help and defaults, the model card and the report all read the same entries. Adding a metric is
one module and one entry here.

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
from facegan.metrics import face_detect, fd_face, fid, kid, memorization, pixel, prdc, swd


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
    pairs: (outputs, truths), uint8 (N, H, W, C) each, image for image: what the paired metrics
        (PSNR, SSIM) compare, e.g. an upscaler's results and the originals.
    """

    real: np.ndarray | None = None
    fake: np.ndarray | None = None
    real_images: np.ndarray | None = None
    fake_images: np.ndarray | None = None
    out_dir: Path | None = None
    seed: int = 0
    memo: dict = field(default_factory=dict)
    pairs: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class Metric:
    """A registered metric: what computes it, what it reports (the headline key first), what it reads."""

    compute: Callable[[MetricInput], dict[str, float]]
    keys: tuple[str, ...]
    about: str  # one line of `facegan evaluate --help`
    inception: bool = True  # reads real / fake Inception features
    pixels: bool = False  # reads real_images / fake_images (mem: optionally, for its pixel-space extras)
    pairs: bool = False  # reads outputs paired with their truths (an upscaler's), not two sets
    default: bool = False  # in `facegan evaluate`'s default set
    extra: str | None = None  # the pip extra it needs beyond facegan[metrics]


METRICS: dict[str, Metric] = {
    "fid": Metric(fid.compute, ("fid",), "Frechet Inception Distance of pool3 features (lower = better)", default=True),
    "kid": Metric(kid.compute, ("kid_mean", "kid_std"), "Kernel Inception Distance: unbiased cubic-kernel MMD^2 over "
                  "random subsets, kid_mean +- kid_std (fine for small sets)", default=True),
    "pr": Metric(prdc.compute_pr, ("precision", "recall"), "improved precision (quality) and recall (variety), k=3",
                 default=True),
    "dc": Metric(prdc.compute_dc, ("density", "coverage"), "density and coverage (Naeem et al. 2020), k=5", default=True),
    "mem": Metric(memorization.compute, ("mem_fraction",), "memorization: share of generated faces whose nearest "
                  "training face is closer than 1/3 of the median real-to-real nearest-neighbour distance (Inception "
                  "features; pixel variant too); closest_pairs.png", pixels=True, default=True),
    "faces": Metric(face_detect.compute, ("faces", "faces_real"), "share of images where dlib's HOG detector finds "
                    "exactly one face (faces_real: the same on the real images)", inception=False, pixels=True,
                    extra="anonymize"),
    "fd_face": Metric(fd_face.compute, ("fd_face",), "Frechet distance x100 in dlib's 128-d face-identity embedding of "
                      "fixed 150x150 chips (lower = better)", inception=False, pixels=True, extra="anonymize"),
    "swd": Metric(swd.compute, ("swd",), "sliced Wasserstein distance x1000 of 7x7 patches of a Laplacian pyramid "
                  "(ProGAN); per level and mean", inception=False, pixels=True),
    "psnr": Metric(pixel.compute_psnr, ("psnr",), "peak signal-to-noise ratio in dB of an upscaler's results against "
                   "the originals, all channels, 8-bit (higher = better)", inception=False, pairs=True),
    "ssim": Metric(pixel.compute_ssim, ("ssim",), "structural similarity (Wang et al. 2004, 11x11 Gaussian window) "
                   "of an upscaler's results against the originals (1 = identical)", inception=False, pairs=True),
}
DEFAULTS = tuple(name for name, m in METRICS.items() if m.default)  # `facegan evaluate` of a GAN run or two sets
PAIRED = tuple(name for name, m in METRICS.items() if m.pairs)  # `facegan evaluate` of an upscaler run


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


def need_pairs(names: list[str] | tuple[str, ...]) -> bool:
    return any(METRICS[n].pairs for n in names)


def keys(names: list[str] | tuple[str, ...]) -> list[str]:
    """The result keys the named metrics report, in registry order (SWD's per-level keys aside)."""
    return [k for n in METRICS if n in names for k in METRICS[n].keys]


def help_text(width: int = 66) -> str:
    """The metrics part of `facegan evaluate --help`, one entry per registered metric."""
    import textwrap

    lines = []
    for name, m in METRICS.items():
        text = m.about + (f" (pip install 'facegan[{m.extra}]')" if m.extra else "") + (" [default]" if m.default else "") \
            + (" [upscaler runs]" if m.pairs else "")
        wrapped = textwrap.wrap(text, width - 11)
        lines += [f"  {name:<8} {wrapped[0]}"] + [f"           {w}" for w in wrapped[1:]]
    return "\n".join(lines)


def compute(names: list[str], inp: MetricInput) -> dict[str, float]:
    """Run the named metrics on ``inp`` and merge their results into one dict."""
    check(names)
    if need_inception(names) and (inp.real is None or inp.fake is None or inp.real.ndim != 2 or inp.fake.ndim != 2
                                  or inp.real.shape[1] != inp.fake.shape[1]):
        raise FaceganError(f"real and fake features must be (N, D) with the same D, got "
                           f"{getattr(inp.real, 'shape', None)} and {getattr(inp.fake, 'shape', None)}")
    if need_pairs(names) and (inp.pairs is None or inp.pairs[0].shape != inp.pairs[1].shape):
        raise FaceganError(f"{', '.join(n for n in names if METRICS[n].pairs)} compare outputs with their truths, image for "
                           f"image: give pairs of equal shape, got {None if inp.pairs is None else [p.shape for p in inp.pairs]}")
    result: dict[str, float] = {}
    for name in names:
        result.update(METRICS[name].compute(inp))
    return result
