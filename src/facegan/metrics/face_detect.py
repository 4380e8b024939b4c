"""faces: the share of images in which an independent face detector finds exactly one face.

A check no ImageNet feature can flatter: dlib's HOG + linear SVM frontal-face detector
(Dalal–Triggs features; it never saw ImageNet) looks for the layout of a face — eyes, nose,
mouth, jaw edges. Reported for the generated set (``faces``) beside the same share on the real
reference images (``faces_real``), which is the most a generator can hope for on that data.

Detector set-up for aligned face crops, the same for real and generated images: HOG's window is
80×80 pixels, so each image is resized to ``SIDE`` (bilinear) and padded by ``PAD`` of its side
on every edge with mid-gray, so the face is whole and away from the border as in a photograph;
then one pass at the image's scale (no pyramid upsampling), threshold 0 (dlib's default).
Exactly one face counts: a fake with two half-faces is not a face. Needs dlib (the anonymize
extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facegan.errors import FaceganError
from facegan.facemodels import require

if TYPE_CHECKING:
    from facegan.metrics import MetricInput

SIDE = 160  # pixels the face crop is resized to: the detector's 80-pixel window covers the inner face
PAD = 0.25  # gray margin on each edge, as a fraction of SIDE
THRESHOLD = 0.0


def padded(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 1|3) → uint8 RGB (SIDE·(1+2·PAD))², the face centred on gray."""
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    face = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    pad = int(round(SIDE * PAD))
    return np.pad(face, ((pad, pad), (pad, pad), (0, 0)), constant_values=128)


def one_face(images: np.ndarray) -> np.ndarray:
    """Per image: whether the detector finds exactly one face (bool, (N,))."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise FaceganError(f"the faces metric needs uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    det = require("dlib", "the faces metric").get_frontal_face_detector()
    return np.array([len(det.run(padded(img), 0, THRESHOLD)[0]) == 1 for img in images], bool)


def compute(inp: MetricInput) -> dict[str, float]:
    if inp.real_images is None or inp.fake_images is None:
        raise FaceganError("the faces metric needs the real and generated images")
    if "faces" not in inp.memo:
        inp.memo["faces"] = float(one_face(inp.real_images).mean())
    return {"faces": float(one_face(inp.fake_images).mean()), "faces_real": inp.memo["faces"]}
