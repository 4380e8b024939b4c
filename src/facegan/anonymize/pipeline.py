"""Decide, per detected face, how it is anonymized, and never leave one as it was.

``auto`` (the default) replaces a face with a generated one when replacement can work well and
pixelates it otherwise — *fail closed*:

- the detector is not confident (a low score: maybe a face, maybe a pattern) → pixelated;
- the face is smaller than MIN_REPLACE_PX (too few pixels to fit a pose to) → pixelated;
- the face is cut by the frame (its box within EDGE_PX of a border) → pixelated;
- the landmarks do not sit in the box (a profile, an occlusion) → pixelated;
- the replacement still looks like the person (dlib's recognition embedding within the
  same-person threshold of the original) → painted again further from the fit (the later
  ``replace.MIXES``), and pixelated when every attempt still matched; a failed one → pixelated.

``replace`` tries every face with plausible landmarks, whatever its score, size or edge, and still
pixelates the ones it cannot do or that keep the identity; ``blur`` and ``pixelate`` apply to all.
Every face gets one :class:`Record` (box, method, reason, seed): the audit trail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from facegan.anonymize import detect, obscure
from facegan.anonymize.detect import Detector, Face
from facegan.anonymize.replace import Replacer
from facegan.errors import FaceganError

MODES = ("auto", "replace", "blur", "pixelate")  # --mode choices, the default first
MIN_REPLACE_PX = 32  # detector box side below which a face is pixelated in auto mode
EDGE_PX = 2  # a box this close to the image border is "cut by the frame"
DETECT_MAX_SIDE = 1280  # detection runs on a copy at most this large (then boxes are scaled back): a 24-MP photo in seconds


@dataclass
class Record:
    """One face in the audit trail."""

    box: list[int]  # x0, y0, x1, y1 in the input's pixels
    score: float
    detector: str
    method: str  # replace | pixelate | blur
    reason: str
    seed: int | None = None  # the seed of the replacement's search (replace only)
    identity_distance: float | None = None  # dlib embedding distance original → result, when checked
    attempt: int | None = None  # which of replace.MIXES painted it (replace only); a video track keeps it
    frame: int | None = None  # video only
    track: int | None = None  # video only
    z: torch.Tensor | None = field(default=None, repr=False)  # the fit: a track's next search starts here (not audited)

    def audit(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "z" and v is not None}


def face_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one face from the run's seed and the face's position (file, face or track)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


class Anonymizer:
    """Detect → decide → replace, pixelate or blur; see the module docstring."""

    def __init__(self, find: Detector, replacer: Replacer | None, mode: str = MODES[0], seed: int = 0,
                 verify: bool = True) -> None:
        if mode not in MODES:
            raise FaceganError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.find, self.replacer, self.mode, self.seed, self.verify = find, replacer, mode, seed, verify

    def detect(self, img: np.ndarray) -> list[Face]:
        """The faces of ``img``, detected on a copy no larger than DETECT_MAX_SIDE, boxes in ``img``'s pixels."""
        cv2 = detect.require("cv2")
        h, w = img.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        if scale == 1.0:
            return self.find(img)
        small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        faces = self.find(small)
        for f in faces:
            f.box = tuple(int(round(v / scale)) for v in f.box)
        return faces

    def image(self, img: np.ndarray, keys: tuple[int, ...] = (), faces: list[Face] | None = None,
              warm: dict[int, tuple[torch.Tensor | None, int]] | None = None) -> tuple[np.ndarray, list[Record]]:
        """The anonymized copy of ``img`` (uint8 (H, W, 3)) and one record per face.

        ``keys`` make the faces' seeds (a folder's file index); ``faces`` skips detection (given by
        a video's tracker), and ``warm`` maps a face's index to (latent to warm-start from or None,
        seed, first attempt): a tracked face keeps its seed and the attempt that last worked.
        """
        out = np.array(img, copy=True)
        faces = self.detect(img) if faces is None else faces
        records = []
        for i, f in enumerate(faces):
            init, seed, attempt = (warm or {}).get(i) or (None, face_seed(self.seed, *keys, i), 0)
            records.append(self._one(img, out, f, seed, init, attempt))
        return out, records

    def _one(self, img: np.ndarray, out: np.ndarray, f: Face, seed: int, init: torch.Tensor | None,
             first: int = 0) -> Record:
        rec = Record(box=list(f.box), score=round(f.score, 3), detector=f.detector, method="pixelate", reason="")
        if self.mode in ("blur", "pixelate"):
            rec.method, rec.reason = self.mode, "--mode " + self.mode
            (obscure.blur if self.mode == "blur" else obscure.pixelate)(out, f)
            return rec
        why = self._why_not(img, f)
        if why is None and self.replacer is None:
            why = "no generator loaded"
        if why is None:
            try:
                why = self._replace(img, out, f, seed, init, first, rec)
            except Exception as e:  # noqa: BLE001 - fail closed: whatever went wrong, the face is still obscured
                why = f"replacement failed ({type(e).__name__}: {e})"
        if why is not None:
            rec.method, rec.reason, rec.seed, rec.z, rec.attempt = "pixelate", why, None, None, None
            obscure.pixelate(out, f)
        return rec

    def _replace(self, img: np.ndarray, out: np.ndarray, f: Face, seed: int, init: torch.Tensor | None,
                 first: int, rec: Record) -> str | None:
        """Fit once, then paint attempt after attempt until dlib no longer sees the person (or, without
        the check, once); fills ``rec`` and returns None, or why the face must be pixelated instead."""
        r = self.replacer
        fit = r.fit(img, f, seed, init=init, steps=None if init is None else max(8, r.steps // 4))
        rec.method, rec.reason, rec.seed, rec.z = "replace", "generated face", seed, fit.z
        before = out.copy() if self.verify else None
        distances = []
        for attempt in range(min(first, len(r.mixes) - 1), len(r.mixes)):
            r.paint(out, fit, seed, attempt)
            rec.attempt = attempt
            if not self.verify:
                return None
            rec.identity_distance = self._identity_distance(img, out, f)
            if rec.identity_distance is None or rec.identity_distance >= detect.SAME_PERSON:
                return None
            distances.append(f"{rec.identity_distance:.2f}")
            out[:] = before  # undo: the next attempt paints on the original again
        return (f"every replacement kept the identity (embedding distances {', '.join(distances)} "
                f"< {detect.SAME_PERSON})")

    def _why_not(self, img: np.ndarray, f: Face) -> str | None:
        """Why this face is pixelated instead of replaced, or None when replacement should be tried."""
        h, w = img.shape[:2]
        x0, y0, x1, y1 = f.box
        if self.mode == "auto":
            if not f.confident:
                return f"low detector score {f.score:.2f} (< {detect.CONFIDENT[f.detector]})"
            if f.side < MIN_REPLACE_PX:
                return f"too small ({f.side} px < {MIN_REPLACE_PX})"
            if x0 < EDGE_PX or y0 < EDGE_PX or x1 > w - EDGE_PX or y1 > h - EDGE_PX:
                return "cut by the frame"
        elif f.side < 8:
            return f"too small ({f.side} px)"
        pts = detect.landmarks(img, f)
        if not _plausible(pts, f.box):
            return "landmarks do not fit the box (a profile or an occlusion)"
        return None

    def _identity_distance(self, img: np.ndarray, out: np.ndarray, f: Face) -> float | None:
        """dlib embedding distance between the original face and the result (landmarks re-read on the result)."""
        try:
            a = detect.embedding(img, f.points)
            redone = Face(f.box, f.score, f.detector)
            b = detect.embedding(out, detect.landmarks(out, redone))
        except FaceganError:
            return None
        return float(np.linalg.norm(a - b))


def _plausible(points: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Landmarks that look like a frontal-ish face in this box: their centre inside it, the eyes
    0.2…0.7 box widths apart and level within 30°."""
    from facegan.anonymize.align import anchors

    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    c = points.mean(0)
    if not (x0 <= c[0] <= x1 and y0 <= c[1] <= y1):
        return False
    left, right, mouth = anchors(points)
    eyes = right - left
    d = float(np.hypot(*eyes))
    return 0.2 * side <= d <= 0.7 * side and abs(eyes[1]) <= 0.58 * abs(eyes[0]) and mouth[1] > max(left[1], right[1])
