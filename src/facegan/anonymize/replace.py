"""Paint a generated face over a real one: same pose, light and skin tone, another person.

For one face (its 68 landmarks known):

1. align the photo's face to the model's framing (:mod:`facegan.anonymize.align`) and take the
   crop at G's resolution;
2. project only its *low frequencies* into G's latent space — the loss is the distance at
   1/4 of G's size (``project``'s ``lowres`` term) plus the latent prior, with no pixel or
   Inception-feature term — so the fit inherits the head's pose, the lighting and the skin
   tone, which live in the blurred face; then move the fitted latent MIXES[0] of the way along
   the sphere to a random latent of the face's seed, because the low frequencies alone still
   carry much of an identity (dlib's embedding put most unmixed fits within its same-person
   threshold of the original, docs/benchmarks.md); a face that still looks like the person is
   painted again further along (the later MIXES: no new fit needed);
3. decode, enlarge to the face's size in the photo (with the trained upscaler when one is
   given and the face is larger than G's faces; bicubic otherwise);
4. match the colour statistics to the original inside the face mask;
5. blend through the feathered landmark-hull mask (or Poisson blending) and put the result back
   through the inverse alignment, touching only the pixels around the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facegan.anonymize import align, detect
from facegan.anonymize.detect import Face
from facegan.errors import FaceganError
from facegan.models.dcgan import latents, to_uint8

BLENDS = ("feather", "poisson")  # --blend choices, the default first
STEPS, STARTS = 60, 4  # each face's fit: optimisation steps and random starts (--steps, --starts)
WEIGHTS = {"pixel": 0.0, "lowres": 1.0, "feature": 0.0, "prior": 0.01}  # low frequencies only (see step 2)
# how far the painted latent lies from the fit towards a random one, per attempt: at 0.5 the identity
# changes while pose and light mostly stay; a face that still matched the person is painted again further out
MIXES = (0.5, 0.8, 1.0)
MAX_WORK_SIDE = 512  # the aligned face is composed at most at this size (a 2000-px face is resized once, at the end)


@dataclass
class Fit:
    """A face fitted once (:meth:`Replacer.fit`), to be painted any number of times."""

    z: torch.Tensor  # the fitted latent (z_dim,): where the next video frame's search starts
    crop: np.ndarray  # the photo's face aligned to G's framing, uint8 (work, work, 3)
    matrix: np.ndarray  # photo → crop (2, 3)
    mask: np.ndarray  # the feathered landmark hull in the crop, float (work, work)


class Replacer:
    """Replaces faces in photos with faces of generator ``G`` (see the module docstring)."""

    def __init__(self, G, template: np.ndarray, upscaler=None, steps: int = STEPS, starts: int = STARTS,
                 blend: str = BLENDS[0], mixes: tuple[float, ...] = MIXES) -> None:
        if blend not in BLENDS:
            raise FaceganError(f"--blend must be one of {', '.join(BLENDS)}, not {blend!r}")
        if upscaler is not None and upscaler.cfg.channels != 3:
            raise FaceganError("the upscaler must take RGB images for anonymizing photos")
        self.G, self.template, self.upscaler = G.eval(), template, upscaler
        self.steps, self.starts, self.blend, self.mixes = steps, starts, blend, tuple(mixes)

    def fit(self, img: np.ndarray, face: Face, seed: int, init: torch.Tensor | None = None,
            steps: int | None = None) -> Fit:
        """Align ``face`` (its landmarks known) and fit its low frequencies in G's latent space.

        ``init`` warm-starts the search from a latent (a tracked face in the next video frame)
        with ``steps`` steps; without it the search runs ``self.steps`` from ``self.starts``
        random latents drawn from ``seed``.
        """
        from facegan.project import project

        cv2 = detect.require("cv2")
        res, channels = self.G.cfg.res, self.G.cfg.channels
        al = align.align(face.points, self.template)
        work = int(min(max(res, al.side), MAX_WORK_SIDE))
        m = al.matrix * (work / al.side)  # photo → aligned crop of work² pixels
        crop = al.warp(img, work)
        target = cv2.resize(crop, (res, res), interpolation=cv2.INTER_AREA)
        if channels == 1:
            target = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)[..., None]
        p = project(self.G, target, steps=steps or self.steps, starts=self.starts, seed=seed, weights=WEIGHTS,
                    progress=False, init=None if init is None else init[None], frames=False)
        return Fit(z=p.z, crop=crop, matrix=m, mask=align.hull_mask(face.points, m, work))

    def paint(self, img: np.ndarray, fit: Fit, seed: int, attempt: int = 0) -> None:
        """Paint the face of ``fit`` moved ``self.mixes[attempt]`` towards ``seed``'s other person into
        ``img`` (uint8 (H, W, 3), modified in place, only around the face)."""
        z = self._other_person(fit.z, seed, self.mixes[attempt])  # the same seed (a video's track) → the same other person
        with torch.no_grad():
            made = to_uint8(self.G(z[None].to(next(self.G.parameters()).device)))[0]
        made = made if self.G.cfg.channels == 3 else np.repeat(made, 3, axis=-1)
        big = match_colour(self._enlarge(made, fit.crop.shape[0]), fit.crop, fit.mask)
        self._paste(img, big, fit.mask, fit.matrix)

    @staticmethod
    def _other_person(z: torch.Tensor, seed: int, mix: float) -> torch.Tensor:
        """The fitted latent moved ``mix`` of the way (along the sphere) to a random one of ``seed``."""
        from facegan.sample import slerp

        other = latents(1, z.numel(), seed + 7919)[0]
        return slerp(z.cpu(), other, mix)[0] if mix > 0 else z

    def _enlarge(self, face: np.ndarray, side: int) -> np.ndarray:
        """G's face at side² pixels: through the upscaler while it is still smaller, then resampled."""
        cv2 = detect.require("cv2")
        if self.upscaler is not None:
            from facegan.upscale import upscale_image

            while face.shape[0] < side and face.shape[0] * self.upscaler.cfg.scale <= 2 * side:
                face = upscale_image(self.upscaler, face)
        if face.shape[0] == side:
            return face
        return cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if face.shape[0] > side else cv2.INTER_CUBIC)

    def _paste(self, img: np.ndarray, face: np.ndarray, mask: np.ndarray, m: np.ndarray) -> None:
        """Blend the aligned ``face`` back into ``img`` through ``mask``, within the face's bounding box only."""
        cv2 = detect.require("cv2")
        side = face.shape[0]
        back = align.invert(m)
        corners = align.apply(back, np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float64))
        h, w = img.shape[:2]
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
        if x1 <= x0 or y1 <= y0:
            return
        shift = back.copy()
        shift[:, 2] -= (x0, y0)
        size = (int(x1 - x0), int(y1 - y0))
        warped = cv2.warpAffine(face, shift, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, shift, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
        roi = img[y0:y1, x0:x1]
        if self.blend == "poisson":
            warped = _poisson(warped, roi, alpha[..., 0])
        roi[:] = np.clip(alpha * warped + (1 - alpha) * roi + 0.5, 0, 255).astype(np.uint8)


def match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``src`` with each channel's mean and spread inside ``mask`` moved to ``ref``'s there (the
    spread ratio kept within ½…2, so a flat reference cannot blow up the generated face's noise)."""
    w = mask[..., None].astype(np.float64)
    total = max(float(w.sum()), 1e-6)
    s, r = src.astype(np.float64), ref.astype(np.float64)
    ms, mr = (s * w).sum((0, 1)) / total, (r * w).sum((0, 1)) / total
    ss = np.sqrt(((s - ms) ** 2 * w).sum((0, 1)) / total) + 1e-6
    sr = np.sqrt(((r - mr) ** 2 * w).sum((0, 1)) / total) + 1e-6
    out = (s - ms) * np.clip(sr / ss, 0.5, 2.0) + mr
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _poisson(face: np.ndarray, roi: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The face Poisson-blended into the region (OpenCV's seamless cloning), for the core of the mask;
    the feathered alpha still fades its edge."""
    cv2 = detect.require("cv2")
    core = (alpha > 0.5).astype(np.uint8) * 255
    pad = 2  # seamlessClone needs the mask clear of the destination's border
    dst = cv2.copyMakeBorder(roi, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    src = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    core = cv2.copyMakeBorder(core, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    ys, xs = np.nonzero(core)
    if len(xs) == 0:
        return face
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    centre = (int((x0 + x1 + 1) // 2), int((y0 + y1 + 1) // 2))
    try:
        out = cv2.seamlessClone(src, dst, core, centre, cv2.NORMAL_CLONE)
    except cv2.error:
        return face
    return out[pad:-pad, pad:-pad]
