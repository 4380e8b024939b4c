"""Find faces and their landmarks with detectors whose weights ship inside registry packages.

Nothing is downloaded: OpenCV's Haar cascade is inside ``opencv-python-headless``; dlib's HOG
detector is compiled into ``dlib-bin``; dlib's CNN (MMOD) detector, its 68- and 5-point
landmark predictors and its 128-d face-recognition ResNet are the files of
``face-recognition-models``. All of them come with ``pip install 'facegan[anonymize]'``.

Each detector returns *candidates* down to a permissive threshold with a score; the pipeline
obscures every candidate and replaces only the confident ones (``Face.confident``), so an
uncertain detection costs a pixelated patch of background rather than a visible face.
Which detector is the default was decided by recall and precision on real faces
(``benchmarks/anonymize_quality.py``, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from facegan.errors import FaceganError
from facegan.facemodels import model_file, require

DETECTORS = ("hog", "cnn", "haar")  # --detector choices
# every candidate is obscured, so recall over candidates decides: HOG and the CNN found all 40 real
# faces (HOG 0.19 s a 640×480 scene, the CNN 13.4 s), the cascade 90 % (docs/benchmarks.md)
DEFAULT_DETECTOR = "hog"

# Score a candidate needs to be replaced rather than only pixelated, and the lowest score reported
# at all, per detector (their scores are on different scales: an SVM margin, a CNN confidence and
# a cascade's last-stage weight).
CONFIDENT = {"hog": 0.0, "cnn": 0.5, "haar": 2.0}
CANDIDATE = {"hog": -0.6, "cnn": -0.3, "haar": 0.0}


@dataclass
class Face:
    """One detected face: its box in image pixels (x0, y0, x1, y1), the detector's score and name,
    and, once :func:`landmarks` ran, the 68 dlib landmarks (68, 2) in image pixels."""

    box: tuple[int, int, int, int]
    score: float
    detector: str
    points: np.ndarray | None = None

    @property
    def confident(self) -> bool:
        return self.score >= CONFIDENT[self.detector]

    @property
    def side(self) -> int:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


Detector = Callable[[np.ndarray], list[Face]]


def detector(name: str = DEFAULT_DETECTOR, upsample: int = 1) -> Detector:
    """A function uint8 (H, W, 3) RGB → the faces in it, best score first.

    ``upsample`` doubles the image that many times before the dlib detectors look (HOG finds faces
    from ≈80 px at 0, ≈40 px at 1); the cascade scans down to 24 px itself.
    """
    if name not in DETECTORS:
        raise FaceganError(f"--detector must be one of {', '.join(DETECTORS)}, not {name!r}")
    return {"hog": _hog, "cnn": _cnn, "haar": _haar}[name](upsample)


def _hog(upsample: int) -> Detector:
    dlib = require("dlib")
    det = dlib.get_frontal_face_detector()

    def run(img: np.ndarray) -> list[Face]:
        rects, scores, _ = det.run(np.ascontiguousarray(img), upsample, CANDIDATE["hog"])
        return _sorted(_face(r, s, "hog") for r, s in zip(rects, scores))
    return run


def _cnn(upsample: int) -> Detector:
    dlib = require("dlib")
    det = dlib.cnn_face_detection_model_v1(model_file("mmod_human_face_detector.dat"))

    def run(img: np.ndarray) -> list[Face]:
        found = det(np.ascontiguousarray(img), upsample)
        return _sorted(_face(d.rect, d.confidence, "cnn") for d in found if d.confidence >= CANDIDATE["cnn"])
    return run


def _haar(upsample: int) -> Detector:
    cv2 = require("cv2")
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def run(img: np.ndarray) -> list[Face]:
        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY))
        rects, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24),
                                                      outputRejectLevels=True)
        out = []
        for (x, y, w, h), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            if s >= CANDIDATE["haar"]:
                out.append(Face((int(x), int(y), int(x + w), int(y + h)), float(s), "haar"))
        return _sorted(out)
    return run


def _face(rect, score: float, name: str) -> Face:
    return Face((int(rect.left()), int(rect.top()), int(rect.right()) + 1, int(rect.bottom()) + 1), float(score), name)


def _sorted(faces) -> list[Face]:
    """Best score first; of two boxes that overlap by IoU > 0.5 (a face found at two scales), keep the better."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(iou(f.box, k.box) <= 0.5 for k in kept):
            kept.append(f)
    return kept


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@lru_cache(maxsize=1)
def _predictor():
    return require("dlib").shape_predictor(model_file("shape_predictor_68_face_landmarks.dat"))


def landmarks(img: np.ndarray, face: Face) -> np.ndarray:
    """The 68 dlib landmarks (68, 2) of a face, in image pixels (set on ``face.points`` too).

    The predictor was trained on HOG boxes; boxes of the other detectors are square-ish but framed
    differently, so they are mapped to a HOG-like box first (measured offsets, see BOX_TO_HOG).
    """
    dlib = require("dlib")
    x0, y0, x1, y1 = _to_hog_box(face)
    shape = _predictor()(np.ascontiguousarray(img), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    face.points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
    return face.points


# How each detector's box relates to a HOG box of the same face: (centre dx, centre dy, size) as
# fractions of the box side; measured on real faces found by both (benchmarks/anonymize_quality.py).
BOX_TO_HOG = {"hog": (0.0, 0.0, 1.0), "cnn": (0.050, 0.074, 1.088), "haar": (-0.006, 0.097, 0.877)}


def _to_hog_box(face: Face) -> tuple[int, int, int, int]:
    dx, dy, size = BOX_TO_HOG[face.detector]
    x0, y0, x1, y1 = face.box
    s = max(x1 - x0, y1 - y0)
    cx, cy, half = (x0 + x1) / 2 + dx * s, (y0 + y1) / 2 + dy * s, size * s / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


@lru_cache(maxsize=1)
def _recognizer():
    return require("dlib").face_recognition_model_v1(model_file("dlib_face_recognition_resnet_model_v1.dat"))


SAME_PERSON = 0.6  # dlib's documented threshold: embeddings closer than this are the same person (99.38 % on LFW)


def embedding(img: np.ndarray, points: np.ndarray) -> np.ndarray:
    """dlib's 128-d face-recognition embedding of the face whose 68 landmarks are ``points``."""
    dlib = require("dlib")
    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
    xs, ys = points[:, 0], points[:, 1]
    rect = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    shape = dlib.full_object_detection(rect, pts)
    return np.array(_recognizer().compute_face_descriptor(np.ascontiguousarray(img), shape), np.float64)
