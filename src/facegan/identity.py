"""Who is in a face: dlib's face detector, its 128-d identity embedding, and the nearest training identity.

Synthetic face sets (:mod:`facegan.faceset`), face-recognition test packs (:mod:`facegan.testpack`)
and the service's filters ask three questions of a generated face, all answered here:

- **Is it one face?** dlib's HOG detector (it never saw our generator or ImageNet) on the face
  resized to :data:`DETECT_SIDE`² (bilinear), threshold 0. Its window is 80 px, so a bare 64²
  aligned crop is never found (0 of 500 AAF faces); resized to 128² it finds 96.6 % of them in
  1.4 ms, as many as the ``faces`` metric's 160² padded with gray (96.4 %, 5.1 ms) or 160² alone
  (97.8 %, 2.4 ms), and 94.6 % of faces64's faces (docs/benchmarks.md). The metric keeps its own
  set-up, so its numbers stay comparable from run to run.
- **Who is it?** dlib's face-recognition ResNet on the fixed chip of metrics/fd_face.py: a
  128-d descriptor in which dlib calls two faces closer than :data:`SAME_PERSON` the same person.
- **Is it somebody from the training photos?** The distance to the nearest of the training set's
  descriptors (computed once per dataset and cached, :func:`training_bank`), by brute force
  (:func:`nearest`): one matrix product per chunk beats any tree in 128 dimensions
  (benchmarks/identity_search.py, docs/benchmarks.md).

The embedding runs in torch (models/face_resnet.py: dlib's descriptors to ~1e-6 at 4.2 ms a face
on 2 cores, where dlib's own single-core run takes 83 ms), the detector on a few threads; every
answer depends on the face alone, never on the batch or the number of workers. Needs the
anonymize extra (dlib and its weights: facegan.facemodels).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from facegan import checks
from facegan.data.prepare import default_cache_dir, open_prepared
from facegan.errors import FaceganError
from facegan.facemodels import model_file, require
from facegan.fileio import atomic_path, sweep_stale
from facegan.metrics import face_detect, fd_face

SAME_PERSON = 0.6  # dlib's threshold: descriptors closer than this are one person (99.38 % on LFW pairs)
# Closer than this to a face already kept is the same image again (benchmarks/identity_search.py,
# 500 AAF faces at 64²): a copy shifted by a pixel lies 0.06–0.18 from its face, a mirrored or
# JPEG-q75 copy 0.08–0.37 (three in four below 0.2), while 95 % of AAF's different photos are
# ≥ 0.23 from their nearest other (1 % are AAF's own exact duplicates). 0.2 removes re-renders of
# one face; mirror images of one person stay, as they do in the training photos.
DUPLICATE = 0.2
DISTANCE_MAX = 2.0  # descriptors are ≈1.4 long: no two faces are farther apart than this
FALSE_MATCH = 0.01  # the share of different people's pairs :func:`same_person_distance` allows below it
MIN_SCORE = face_detect.THRESHOLD  # the detector's score a face needs (an SVM margin; dlib's default 0)
DETECT_SIDE = 128  # pixels every face is resized to before detection (see the module's docstring)
_LOWEST = -1.0  # scores down to here are reported, so a rejected face's score is recorded too
BANK_PART = 2048  # training faces per cached part: a killed bank build loses at most one part


@dataclass
class Looks:
    """What the detector and the embedding saw in each of N faces.

    ``faces``: faces found with a score ≥ the threshold asked for; ``score``: the best score found
    (−inf when none down to −1); ``embedding`` (N, 128): the descriptor, NaN where no single face
    was found (the embedding is not computed for those: it is the slow part).
    """

    faces: np.ndarray
    score: np.ndarray
    embedding: np.ndarray


def check_privacy(value: float, flag: str = "--privacy") -> float:
    """The same-person distance a face must keep from every training face: a number in (0, 2]."""
    return checks.number(flag, value, 0.0, DISTANCE_MAX, lo_open=True)


def _sized(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 1|3) → uint8 RGB DETECT_SIDE², bilinear."""
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else np.ascontiguousarray(img)
    if rgb.shape[:2] == (DETECT_SIDE, DETECT_SIDE):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((DETECT_SIDE, DETECT_SIDE), Image.Resampling.BILINEAR))


def _detect(det: object, images: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    faces, score = np.zeros(len(images), np.int64), np.full(len(images), -np.inf)
    for i, img in enumerate(images):
        _, scores, _ = det.run(_sized(img), 0, _LOWEST)  # type: ignore[attr-defined]
        faces[i] = sum(s >= min_score for s in scores)
        score[i] = max(scores, default=-np.inf)
    return faces, score


class Inspector:
    """The detector on ``workers`` threads (dlib's HOG releases the GIL for much of its work: two
    threads took 3.4 ms a face where one took 5.4, on 240² images) and the embedding in torch (every
    core). Use as a context manager."""

    def __init__(self, workers: int | None = None, purpose: str = "the identity checks") -> None:
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise FaceganError(f"--workers must be at least 1, not {self.workers}")
        dlib = require("dlib", purpose)
        self.detectors = [dlib.get_frontal_face_detector() for _ in range(self.workers)]
        self.purpose = purpose
        fd_face.network(purpose)  # the weights file: a missing extra is one line before any work
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def look(self, images: np.ndarray, min_score: float = MIN_SCORE) -> Looks:
        """Detection and descriptors of uint8 (N, H, W, C) aligned faces (descriptors of single faces only)."""
        if images.ndim != 4 or images.dtype != np.uint8:
            raise FaceganError(f"faces must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        parts = np.array_split(np.arange(len(images)), self.workers)
        if self.pool is None:
            found = [_detect(self.detectors[0], images, min_score)]
        else:
            found = list(self.pool.map(lambda k: _detect(self.detectors[k], images[parts[k]], min_score), range(self.workers)))
        faces, score = np.concatenate([f for f, _ in found]), np.concatenate([s for _, s in found])
        emb = np.full((len(images), 128), np.nan, np.float32)
        one = np.flatnonzero(faces == 1)
        if len(one):
            emb[one] = self.embed(images[one])
        return Looks(faces, score, emb)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, 128) float32 descriptors, every image taken as one face (no detection)."""
        return fd_face.embed(np.ascontiguousarray(images), self.purpose).astype(np.float32)


def nearest(queries: np.ndarray, bank: np.ndarray, cells: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
    """For each query descriptor: the Euclidean distance to its nearest row of ``bank``, and that row.

    Brute force: |b|² − 2q·b in float32, one matrix product per chunk of queries sized so the
    chunk's distance matrix holds about ``cells`` values (256 MB; 10k queries against 200k took
    36 s in chunks of 2²⁰ values, 7.5 s in chunks of 2²⁶), then the winner's distance recomputed
    exactly in float64. In 128 dimensions no tree prunes: scipy's cKDTree was 17× slower than even
    the slowest of those (docs/benchmarks.md).
    With an empty bank: distance inf, index −1.
    """
    m = len(queries)
    dist, idx = np.full(m, np.inf), np.full(m, -1, np.int64)
    if m == 0 or len(bank) == 0:
        return dist, idx
    b = torch.from_numpy(np.ascontiguousarray(bank, np.float32))
    b2 = (b * b).sum(1)
    chunk = max(1, cells // len(bank))
    for s in range(0, m, chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + chunk], np.float32))
        idx[s:s + len(q)] = torch.addmm(b2, q, b.T, alpha=-2).argmin(1).numpy()  # |q|² is the same along a row
    dist[:] = np.linalg.norm(queries.astype(np.float64) - bank[idx].astype(np.float64), axis=1)
    return dist, idx


def training_bank(prepared: str | Path, inspector: Inspector, cache_dir: str | Path | None = None,
                  progress: bool = True) -> np.ndarray:
    """The descriptors (N, 128) of every face of a prepared dataset, computed once and cached.

    Every training face is embedded, found by the detector or not: a face the detector misses is
    still somebody. The cache key is the dataset's content fingerprint and packing (as for FID's
    real features) and the network file; the descriptors are stored in parts of
    :data:`BANK_PART` faces, so a killed build (hours for 200k faces) resumes at its last part.
    """
    data = open_prepared(prepared)
    keys = ["fingerprint", "count", "res", "channels", "crop", "min_size", "limit"]
    weights = Path(model_file(fd_face.WEIGHTS, "the privacy check"))
    key = json.dumps([{k: data.manifest.get(k) for k in keys}, data.path.stat().st_size, weights.stat().st_size,
                      fd_face.CHIP_BOX])
    folder = Path(cache_dir or default_cache_dir()) / f"identities-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale(folder)
    n = len(data)
    parts = []
    with tqdm(total=n, unit="face", desc="training identities", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, n, BANK_PART):
            path = folder / f"part-{s // BANK_PART:06d}.npy"
            if path.is_file():
                part = np.load(path)
            else:
                part = inspector.embed(np.asarray(data.images[s:s + BANK_PART]))
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, part)
            parts.append(part)
            bar.update(len(part))
    bank = np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)
    if bank.shape != (n, 128):
        raise FaceganError(f"the cached identities in {folder} do not match the dataset; delete that folder and retry")
    return bank


def same_person_distance(bank: np.ndarray, false_match: float = FALSE_MATCH, pairs: int = 20_000) -> tuple[float, float]:
    """(the distance below which ``false_match`` of random pairs of different training photos fall,
    the share of those pairs below dlib's :data:`SAME_PERSON`), from ``pairs`` pairs drawn with a
    fixed seed (identical photos, a dataset's own duplicates, left out).

    dlib's 0.6 was set on LFW, mostly adult Western faces; on All-Age-Faces (East-Asian, ages
    2–80) a quarter of pairs of different people are closer than 0.6, so nearly every face,
    generated or real, is "the same person" as somebody among 10k training photos. These two
    numbers say how the threshold fares on the user's own data (the datasheet and the error
    that stops a set that keeps nothing report them).
    """
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(bank), pairs), rng.integers(0, len(bank), pairs)
    d = np.linalg.norm(bank[a].astype(np.float64) - bank[b], axis=1)
    d = d[d > 1e-6]
    if len(d) == 0:
        return 0.0, 1.0
    return float(np.quantile(d, false_match)), float(np.mean(d < SAME_PERSON))
