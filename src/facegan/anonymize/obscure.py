"""The fail-closed fallbacks: pixelate or blur a face's region beyond recognition.

The region is the detector's box (joined with the landmark hull when there is one) grown by
``MARGIN`` on every side and clipped to the image, so hair line, ears and a box that sits a
little off still go. Mosaic blocks are ``side / BLOCKS`` wide — 8 across a face leaves its shape
but no identity (a face-recognition embedding no longer matches, docs/benchmarks.md); the blur's
σ is ``side / 6`` for the same reason.
"""

from __future__ import annotations

import numpy as np

from facegan.anonymize import detect
from facegan.anonymize.detect import Face

MARGIN = 0.15
BLOCKS = 8
BLUR_SIGMA = 1 / 6


def region(img: np.ndarray, face: Face) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the face's box, joined with its landmarks, grown by MARGIN, inside the image."""
    x0, y0, x1, y1 = face.box
    if face.points is not None:
        (px0, py0), (px1, py1) = face.points.min(0), face.points.max(0)
        x0, y0, x1, y1 = min(x0, px0), min(y0, py0), max(x1, px1), max(y1, py1)
    mx, my = MARGIN * (x1 - x0), MARGIN * (y1 - y0)
    h, w = img.shape[:2]
    return (int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my))),
            int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my))))


def pixelate(img: np.ndarray, face: Face) -> None:
    """Replace the face's region with a mosaic of BLOCKS blocks across its shorter side (in place)."""
    cv2 = detect.require("cv2")
    x0, y0, x1, y1 = region(img, face)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    block = max(1.0, min(x1 - x0, y1 - y0) / BLOCKS)
    small = cv2.resize(roi, (max(1, round((x1 - x0) / block)), max(1, round((y1 - y0) / block))), interpolation=cv2.INTER_AREA)
    roi[:] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)


def blur(img: np.ndarray, face: Face) -> None:
    """Gaussian-blur the face's region with σ = side·BLUR_SIGMA (in place)."""
    cv2 = detect.require("cv2")
    x0, y0, x1, y1 = region(img, face)
    if x1 <= x0 or y1 <= y0:
        return
    sigma = max(1.0, BLUR_SIGMA * min(x1 - x0, y1 - y0))
    img[y0:y1, x0:x1] = cv2.GaussianBlur(np.ascontiguousarray(img[y0:y1, x0:x1]), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
