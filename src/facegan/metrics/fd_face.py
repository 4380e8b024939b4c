"""fd_face: Fréchet distance between real and generated faces in a face-identity embedding, ×100.

FID measures in Inception features trained on ImageNet classes; a discriminator that looks
through ImageNet features can lower it without better faces. This metric measures in the 128-d
embedding of dlib's face-recognition ResNet (``face-recognition-models``; trained to tell
identities apart, with a metric loss, on faces only; run in torch, models/face_resnet.py): the space where "is this a plausible
person" lives. Fréchet distance of the two Gaussians, as FID (metrics/fid.py); the raw values are
of order 10⁻², so the metric reports them ×100. Real-vs-real between two disjoint halves of the
same face set is the floor (docs/benchmarks.md).

The chip: dlib's network expects the 150×150 chip that ``get_face_chip`` cuts around 5 landmarks
(padding 0.25). Our faces are already aligned crops, and generated ones may lack the landmarks a
detector needs, so every image — real or generated — gets the same fixed chip: the square
``CHIP_BOX`` (fractions of the image side), resized to 150². ``CHIP_BOX`` is where dlib's own
chips lie in aligned face crops, measured on real faces (the mean over the detected ones;
docs/benchmarks.md): real and generated faces go in alike, and no face is dropped.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from facegan.errors import FaceganError
from facegan.facemodels import model_file
from facegan.metrics.fid import frechet_distance, stats
from facegan.models import face_resnet
from facegan.models.face_resnet import FaceResNet

if TYPE_CHECKING:
    from facegan.metrics import MetricInput

CHIP = 150
# (left, top, right, bottom) as fractions of the side: the mean of dlib's chips in 485 AAF crops
# (faces found in 485 of 500; std 0.03–0.06; rotation −1.6° ± 1.8°, ignored), benchmarks/fd_face_chip.py.
# It reaches below the crop: the missing rows are the bottom row repeated.
CHIP_BOX = (0.083, 0.232, 0.922, 1.07)
EDGE = 0.1  # margin (fraction of the side) added around each image before the box is cut
SCALE = 100.0
BATCH = 64
WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"


def chips(images: np.ndarray, box: tuple[float, float, float, float] = CHIP_BOX) -> list[np.ndarray]:
    """uint8 (N, H, W, C) aligned faces → 150×150 RGB chips: the box ``box`` of each (edge pixels
    repeated where it reaches outside), resized bicubic."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise FaceganError(f"fd_face needs uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    _, h, w, c = images.shape
    mh, mw = int(np.ceil(EDGE * h)), int(np.ceil(EDGE * w))
    crop = (mw + box[0] * w, mh + box[1] * h, mw + box[2] * w, mh + box[3] * h)
    out = []
    for img in images:
        rgb = np.repeat(img, 3, axis=2) if c == 1 else img
        pil = Image.fromarray(np.pad(rgb, ((mh, mh), (mw, mw), (0, 0)), mode="edge"))
        out.append(np.asarray(pil.resize((CHIP, CHIP), Image.Resampling.BICUBIC, box=crop)))
    return out


def network(purpose: str = "the fd_face metric") -> FaceResNet:
    """dlib's face-recognition ResNet as a torch module (models/face_resnet.py: dlib's descriptors
    to 5·10⁻⁷, ≈20× faster than dlib's own single-core run), read once per process; ``purpose``
    names the caller in the one-line error when the weights are not installed."""
    return _load(model_file(WEIGHTS, purpose))


@functools.lru_cache(maxsize=2)
def _load(path: str) -> FaceResNet:
    return face_resnet.load(path)


@torch.no_grad()
def embed(images: np.ndarray, purpose: str = "the fd_face metric") -> np.ndarray:
    """(N, 128) float64 face descriptors of aligned face crops (float32 arithmetic, as dlib's)."""
    net = network(purpose)
    out = [np.zeros((0, 128))]
    for s in range(0, len(images), BATCH):
        x = torch.from_numpy(np.stack(chips(images[s:s + BATCH]))).permute(0, 3, 1, 2).float()
        out.append(net(x).double().numpy())
    return np.concatenate(out)


def fd_face(real: np.ndarray, fake: np.ndarray) -> float:
    """×100 Fréchet distance of two (N, 128) embedding sets."""
    return SCALE * frechet_distance(*stats(real), *stats(fake))


def reference(memo: dict, real_images: np.ndarray) -> np.ndarray:
    """The real set's embeddings, computed once per memo (the caller keeps one memo per real set)."""
    if "fd_face" not in memo:
        memo["fd_face"] = embed(real_images)
    return memo["fd_face"]


def compute(inp: MetricInput) -> dict[str, float]:
    if inp.real_images is None or inp.fake_images is None:
        raise FaceganError("fd_face needs the real and generated images")
    return {"fd_face": fd_face(reference(inp.memo, inp.real_images), embed(inp.fake_images))}
