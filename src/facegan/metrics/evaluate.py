"""Put the pieces together: images → Inception features (when a metric reads them) → the registered metrics.

Used by `facegan evaluate` (a run against its data, or two image sets) and by the trainer's
periodic evaluation. Real-set features are cached by content fingerprint, so evaluating many
checkpoints against one dataset runs Inception over the real images once. With several ranks
(``dist``: torchrun, or ``facegan evaluate --nproc N``) the Inception batches — generated and real
— are dealt over the ranks and their features gathered; every rank then holds the same metrics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from facegan import metrics
from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.dist import Dist
from facegan.fileio import write_text_atomic
from facegan.metrics import inception
from facegan.models.dcgan import Generator

DEFAULT_METRICS = metrics.DEFAULTS
PIXEL_REAL_MAX = 10_000  # real images the pixel metrics read when n_real is not given


class Evaluator:
    """Metrics of generators (or image sets) against one real dataset.

    real_src: any source `prepare` takes, or a prepared .npy; it is prepared at ``res``.
    n_real: how many real images to use (None = all); the features are cached.
    """

    def __init__(self, real_src: str | Path | None, res: int, channels: int = 3, n_real: int | None = None,
                 device: str | torch.device = "cpu", weights: str | Path | None = None, batch: int = 64,
                 progress: bool = True, backend: str = inception.BACKENDS[0], dist: Dist | None = None) -> None:
        self.device, self.weights, self.batch, self.progress, self.backend = device, weights, batch, progress, backend
        self.dist = dist or Dist()  # one process: every collective below is a no-op
        self.real_path = self.dist.first_then_rest(lambda: resolve_dataset(real_src, res, channels, progress=progress))
        self.real = open_prepared(self.real_path)
        self.n_real = n_real
        self._real_feats: np.ndarray | None = None
        self._real_imgs: np.ndarray | None = None
        self.memo: dict = {}  # what the face-space metrics derive from the real set, computed once

    def real_features(self) -> np.ndarray:
        if self._real_feats is None:
            self._real_feats = inception.reference_features(self.real_path, self.n_real, batch_size=self.batch,
                                                            device=self.device, progress=self.progress,
                                                            weights=self.weights, backend=self.backend, dist=self.dist)
        return self._real_feats

    def real_images(self, like_features: bool) -> np.ndarray:
        """The real images the pixel metrics compare with: an evenly spaced subset, the very images whose
        features are used when ``like_features`` (mem pairs them up), else at most PIXEL_REAL_MAX of
        them when no ``n_real`` is given — a whole CelebA is 10 GB at 128², and a face embedding of
        each an hour on a CPU."""
        total = len(self.real.images)
        n = self.n_real or (total if like_features else min(total, PIXEL_REAL_MAX))
        if self._real_imgs is None or len(self._real_imgs) != n:
            self._real_imgs = np.asarray(self.real.images[inception.subset_indices(total, n)])
        return self._real_imgs

    def _features(self, images: np.ndarray) -> np.ndarray:
        return inception.extract_sharded(lambda s, m: np.asarray(images[s:s + m]), len(images), self.batch, self.dist,
                                         self.device, self.progress, self.weights, self.backend)

    def of_generator(self, G: Generator, n: int, names: list[str] | tuple[str, ...] = DEFAULT_METRICS,
                     seed: int = 0, out_dir: Path | None = None) -> dict[str, float]:
        """Metrics of n faces of G (seed ``seed``) against the real set."""
        names = metrics.check(names)
        pixels = metrics.need_pixels(names)
        if not metrics.need_inception(names):  # face-space and pixel metrics only: no Inception pass
            return self._compute(names, None, G.sample(n, seed=seed, batch_size=self.batch), out_dir, seed)
        kept: list[np.ndarray] = []

        def batch_of(start: int, count: int) -> np.ndarray:
            imgs = G.sample(count, seed=seed, start=start)
            if pixels and not self.dist.active:
                kept.append(imgs)  # the pixel metrics need the faces too
            return imgs

        fake = inception.extract_sharded(batch_of, n, self.batch, self.dist, self.device, self.progress, self.weights,
                                         self.backend)
        if pixels and self.dist.active:
            kept = [G.sample(n, seed=seed, batch_size=self.batch)]  # ≈10× cheaper than features; the same batches
        return self._compute(names, fake, np.concatenate(kept) if kept else None, out_dir, seed)

    def of_images(self, fake_src: str | Path, names: list[str] | tuple[str, ...] = DEFAULT_METRICS,
                  n: int | None = None, out_dir: Path | None = None, seed: int = 0) -> dict[str, float]:
        """Metrics of an image set (any source) against the real set, at the same resolution."""
        res, channels = self.real.images.shape[1], self.real.images.shape[3]
        fake_imgs = open_prepared(self.dist.first_then_rest(
            lambda: resolve_dataset(fake_src, res, channels, progress=self.progress))).images
        return self.of_array(fake_imgs[:n] if n else fake_imgs, names, out_dir, seed)

    def of_array(self, images: np.ndarray, names: list[str] | tuple[str, ...] = DEFAULT_METRICS,
                 out_dir: Path | None = None, seed: int = 0) -> dict[str, float]:
        """Metrics of uint8 (N, H, W, C) images in memory (e.g. upscaled generated faces) against the real set."""
        names = metrics.check(names)
        fake = self._features(images) if metrics.need_inception(names) else None
        return self._compute(names, fake, np.asarray(images) if metrics.need_pixels(names) else None, out_dir, seed)

    def _compute(self, names: list[str], fake: np.ndarray | None, fake_images: np.ndarray | None,
                 out_dir: Path | None, seed: int) -> dict[str, float]:
        real_imgs = self.real_images(like_features="mem" in names) if metrics.need_pixels(names) else None
        real = self.real_features() if metrics.need_inception(names) else None
        inp = metrics.MetricInput(real=real, fake=fake, real_images=real_imgs, fake_images=fake_images,
                                  out_dir=out_dir, seed=seed, memo=self.memo)
        t = time.time()
        result = metrics.compute(names, inp)
        result["n_real"] = float(len(real if real is not None else real_imgs))
        result["n_fake"] = float(len(fake if fake is not None else fake_images))
        result["seconds_metrics"] = round(time.time() - t, 2)
        return result


def format_table(result: dict[str, float]) -> str:
    """A readable two-column table of a metrics dict."""
    width = max(len(k) for k in result)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for k, v in result.items():
        lines.append(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> Path:
    return write_text_atomic(path, json.dumps(result, indent=2))
