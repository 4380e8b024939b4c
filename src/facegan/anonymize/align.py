"""Align a face in a photo to the framing the generator was trained on, and back.

Three anchor points come from the 68 dlib landmarks (the two eye centres and the mouth centre);
a similarity transform (rotation, uniform scale, shift: faces are not sheared) maps them onto
where the model's own faces have them — the *template*, measured by running the same landmark
predictor on faces the generator made (:func:`measure_template`), so whatever data the model
was trained on, it is asked to paint the pose it knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegan.anonymize import detect

JAW, BROWS, LEFT_EYE, RIGHT_EYE, MOUTH = range(0, 17), range(17, 27), range(36, 42), range(42, 48), range(48, 68)

# Anchors in a square frame of side 1, the medians measured on photos of faces-aaf-128 (eye-aligned
# portraits framed like CelebA's crop; benchmarks/anonymize_quality.py, docs/benchmarks.md): the
# template of a model whose own faces the predictor cannot read (a model of cartoons, an untrained one).
DEFAULT_TEMPLATE = np.array([[0.348, 0.508], [0.646, 0.499], [0.510, 0.833]])


def anchors(points: np.ndarray) -> np.ndarray:
    """(3, 2): left eye centre, right eye centre, mouth centre (image coordinates)."""
    return np.stack([points[list(LEFT_EYE)].mean(0), points[list(RIGHT_EYE)].mean(0), points[list(MOUTH)].mean(0)])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 similarity transform that maps src (N, 2) onto dst (N, 2) in least squares (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    flip = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float(np.trace(np.diag(sig) @ flip) / s.var(0).sum())
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2×3 affine transform."""
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -(a @ m[:, 2])[:, None]], axis=1)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


@dataclass
class Alignment:
    """Photo → aligned square of ``side`` pixels (``matrix``), for one face."""

    matrix: np.ndarray  # 2×3, photo pixels → aligned pixels
    side: int  # the aligned square's side at the photo's own scale (pixels)

    def warp(self, img: np.ndarray, side: int | None = None) -> np.ndarray:
        """The aligned crop at ``side``² (default: the photo's own scale), borders reflected."""
        cv2 = detect.require("cv2")
        side = side or self.side
        m = self.matrix * (side / self.side)
        flags = cv2.INTER_AREA if side < self.side else cv2.INTER_LINEAR
        return cv2.warpAffine(img, m, (side, side), flags=flags, borderMode=cv2.BORDER_REFLECT101)


def align(points: np.ndarray, template: np.ndarray, min_side: int = 8, max_side: int = 1024) -> Alignment:
    """The alignment of the face with 68 landmarks ``points`` to ``template`` (3, 2) in the unit square."""
    src = anchors(points)
    eyes_photo = float(np.linalg.norm(src[1] - src[0]))
    eyes_unit = float(np.linalg.norm(template[1] - template[0]))
    side = int(np.clip(round(eyes_photo / eyes_unit), min_side, max_side))
    return Alignment(similarity(src, template * side), side)


def measure_template(G, n: int = 64, seed: int = 0, min_found: int = 16) -> tuple[np.ndarray, str]:
    """(template, where it came from): the median anchors of G's own faces, found by the HOG detector
    and the landmark predictor on faces enlarged to 256²; DEFAULT_TEMPLATE when fewer than
    ``min_found`` of ``n`` faces are read (a model of cartoons, an untrained one)."""
    from facegan import sample

    faces = sample.faces(G, n, seed=seed)
    if faces.shape[-1] == 1:
        faces = np.repeat(faces, 3, axis=-1)
    found = read_anchors(faces)
    if len(found) < min_found:
        return DEFAULT_TEMPLATE.copy(), f"default (the predictor read {len(found)} of {n} of the model's faces)"
    return np.median(np.stack(found), axis=0), f"measured on {len(found)} of {n} of the model's faces"


def face_target(img: np.ndarray, G, template: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(G's-size crop, what was found) of the largest confident face of ``img`` (uint8 RGB), aligned by its
    landmarks to the framing of G's own faces (``template``, measured when not given): what
    ``facegan project --crop align`` fits, so an ordinary photo is framed as the training data was."""
    from facegan.errors import FaceganError

    faces = [f for f in detect.detector("hog", upsample=1)(img) if f.confident]
    if not faces:
        raise FaceganError("no face found in the photo (dlib's HOG detector); give a portrait framed like the training "
                           "data with --crop center or --crop none")
    face = max(faces, key=lambda f: f.side)
    template = measure_template(G)[0] if template is None else template
    crop = align(detect.landmarks(img, face), template).warp(img, G.cfg.res)
    if G.cfg.channels == 1:
        cv2 = detect.require("cv2")
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
    return crop, f"the face at {list(face.box)} (of {len(faces)} found), aligned by its landmarks"


def read_anchors(faces: np.ndarray, big: int = 256, pad: int = 64) -> list[np.ndarray]:
    """The anchors (3, 2) in the unit square of each uint8 RGB face (n, h, w, 3) that HOG and the
    landmark predictor can read once it is enlarged to ``big``² with ``pad`` pixels of border (a small
    face's features are too few pixels for them)."""
    cv2 = detect.require("cv2")
    find = detect.detector("hog", upsample=0)
    found = []
    for f in faces:
        img = cv2.copyMakeBorder(cv2.resize(f, (big, big), interpolation=cv2.INTER_CUBIC), pad, pad, pad, pad,
                                 cv2.BORDER_REPLICATE)
        hits = [h for h in find(img) if h.confident]
        if hits:
            found.append((anchors(detect.landmarks(img, hits[0])) - pad) / big)
    return found


def hull_mask(points: np.ndarray, m: np.ndarray, side: int, forehead: float = 0.25, feather: float = 0.04) -> np.ndarray:
    """float32 (side, side) in [0, 1]: the face's landmark hull in aligned coordinates, the brows
    raised by ``forehead`` of the face height to take in the forehead, feathered by a Gaussian of
    ``feather``·side (so the seam fades over a few pixels instead of showing a hard edge)."""
    cv2 = detect.require("cv2")
    p = apply(m, points)
    jaw, brows = p[list(JAW)], p[list(BROWS)].copy()
    height = jaw[:, 1].max() - brows[:, 1].min()
    brows[:, 1] -= forehead * height
    hull = cv2.convexHull(np.concatenate([jaw, brows]).astype(np.float32)).astype(np.int32)
    mask = np.zeros((side, side), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA)
    sigma = max(0.5, feather * side)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, round(sigma)))
    return cv2.GaussianBlur(mask, (0, 0), sigma)
