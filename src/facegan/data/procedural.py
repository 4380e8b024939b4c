"""Procedural cartoon faces: the built-in training set that needs no download.

A GAN toolkit is hard to try without data, and real face datasets are large, licensed and need
a network. This module paints simple but clearly face-like portraits instead, so the demo, the
tutorials and the tests run offline, in seconds, with nothing to fetch. A DCGAN trained on them
for a few minutes already produces recognisable faces.

Design choices:

* **Deterministic per index.** Face ``i`` of stream ``seed`` takes its parameters from its own
  generator, ``np.random.default_rng([seed, i])``, so any slice of the stream can be rendered on
  its own: a dataset can be regenerated bit for bit, extended later, or rendered in parallel
  chunks. Pixels are computed only with ``+ - * /``, ``sqrt``, ``abs``, ``min``/``max`` and
  ``floor`` (no transcendental functions, no reductions), which IEEE-754 arithmetic makes
  identical on every platform.
* **Resolution independent.** Shapes live in normalised coordinates (the image spans ``[-1, 1]``
  on both axes), so a face looks the same at 16x16 and at 256x256.
* **Anti-aliased.** Every shape is a signed distance (negative inside) turned into coverage by a
  linear ramp one pixel wide; layers are composited back to front (painter's algorithm).
* **Fast.** A chunk of faces is painted at once with numpy broadcasting (per-face parameters of
  shape ``(B, 1, 1)`` against pixel grids), and each feature only in a window of pixels around
  it (10,000 faces at 64x64 take a few seconds on one CPU core).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_CHUNK_PIXELS = 1 << 18  # faces per chunk x res**2: keeps the temporaries about cache-sized
_MARGIN_PX = 2  # slack around each painted window, in pixels (see _Canvas.region)
_DRAWS = 96  # uniforms drawn per face; a fixed count, so face i never depends on other faces

# Pose jitter: face-centre offset, scale, and roll as tan(angle) (about +-6 degrees).
_CX, _CY, _SCALE, _TILT = (-0.05, 0.05), (0.02, 0.12), (0.97, 1.12), 0.1

# Skin tones, very light to very dark (sRGB in 0..1); each face picks a point on this polyline.
_SKIN = np.array([[0.99, 0.87, 0.78], [0.96, 0.80, 0.68], [0.90, 0.70, 0.55], [0.80, 0.58, 0.42],
                  [0.66, 0.45, 0.31], [0.50, 0.33, 0.22], [0.36, 0.23, 0.16], [0.25, 0.16, 0.11]])
# Hair: black, dark brown, brown, blond, auburn, ginger, grey, white; with their frequencies.
_HAIR = np.array([[0.07, 0.06, 0.06], [0.22, 0.14, 0.09], [0.42, 0.27, 0.15], [0.86, 0.71, 0.45],
                  [0.55, 0.22, 0.09], [0.80, 0.42, 0.18], [0.58, 0.58, 0.58], [0.88, 0.87, 0.84]])
_HAIR_P = [0.25, 0.22, 0.16, 0.12, 0.08, 0.04, 0.08, 0.05]
# Irises: dark brown, brown, hazel, green, blue, grey.
_IRIS = np.array([[0.22, 0.12, 0.06], [0.42, 0.26, 0.12], [0.47, 0.40, 0.18], [0.30, 0.50, 0.30],
                  [0.30, 0.52, 0.78], [0.50, 0.56, 0.62]])
_IRIS_P = [0.35, 0.20, 0.10, 0.10, 0.15, 0.10]
# Glasses frames: black, tortoiseshell, metal, red, navy.
_FRAME = np.array([[0.05, 0.05, 0.05], [0.35, 0.20, 0.10], [0.72, 0.72, 0.74], [0.60, 0.10, 0.10],
                   [0.10, 0.15, 0.35]])
_FRAME_P = [0.40, 0.20, 0.20, 0.10, 0.10]


def render_faces(n: int, res: int, seed: int = 0, channels: int = 3, start: int = 0) -> np.ndarray:
    """Render faces ``start .. start+n-1`` of stream ``seed`` as ``uint8 (n, res, res, channels)``.

    ``channels=3`` gives RGB; ``channels=1`` gives its ITU-R 601 luminance. Face ``k`` of the
    result depends only on ``(seed, start + k)``, never on ``n`` or on how the range is chunked.
    """
    if n < 0 or start < 0 or seed < 0:
        raise ValueError(f"n, start and seed must be >= 0, got n={n}, start={start}, seed={seed}")
    if res < 8:
        raise ValueError(f"res must be at least 8, got {res}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    out = np.empty((n, res, res, channels), np.uint8)
    chunk = max(1, _CHUNK_PIXELS // (res * res))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        draws = np.stack([np.random.default_rng([seed, start + i]).random(_DRAWS)
                          for i in range(lo, hi)])
        rgb = np.clip(_paint(draws, res), 0.0, 1.0)
        if channels == 1:
            rgb = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]
        out[lo:hi] = np.rint(rgb * 255).astype(np.uint8).transpose(1, 2, 3, 0)
    return out


class _Draws:
    """Hands out the per-face uniforms one column at a time, scaled and shaped ``(B, 1, 1)``."""

    def __init__(self, uniforms: np.ndarray) -> None:
        self._u, self._next = uniforms, 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
        column = self._u[:, self._next]
        self._next += 1
        return (lo + (hi - lo) * column).astype(np.float32)[:, None, None]

    def pick(self, palette: np.ndarray, probs: list[float]) -> np.ndarray:
        """A palette entry per face, drawn with the given frequencies, as a ``(3, B, 1, 1)`` colour."""
        index = np.searchsorted(np.cumsum(probs), self().ravel(), side="right")
        return _rgb(palette[np.minimum(index, len(palette) - 1)])


def _rgb(colours: np.ndarray) -> np.ndarray:
    """``(B, 3)`` colours -> ``(3, B, 1, 1)``, to broadcast against ``(3, B, H, W)`` images."""
    return np.asarray(colours, np.float32).T[:, :, None, None]


class _Region:
    """A window of pixels around one feature of every face, in face-frame coordinates ``X, Y``."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, light_xy: tuple[np.ndarray, np.ndarray],
                 px: np.ndarray, img: np.ndarray) -> None:
        self.X, self.Y, self._light_xy, self.px, self.img = X, Y, light_xy, px, img

    @property
    def light(self) -> np.ndarray:
        """Brightness factor of the directional light at each pixel (about 0.7 to 1.3)."""
        return 1 + self._light_xy[0] * self.X + self._light_xy[1] * self.Y

    def cover(self, d: np.ndarray, width: np.ndarray | float | None = None) -> np.ndarray:
        """Coverage in 0..1 of a shape with signed distance ``d``: a ramp one pixel (or ``width``) wide."""
        return np.clip(0.5 - d / (self.px if width is None else width), 0.0, 1.0)

    def paint(self, alpha: np.ndarray, colour: np.ndarray, shade: np.ndarray | None = None) -> None:
        """Composite ``colour`` (times a per-pixel ``shade``) over the image with coverage ``alpha``."""
        self.img *= 1 - alpha
        self.img += colour * (alpha if shade is None else alpha * shade)


class _Canvas:
    """The images of a chunk of faces, and each face's pose: where its face frame lies."""

    def __init__(self, img: np.ndarray, cx: np.ndarray, cy: np.ndarray, scale: np.ndarray,
                 tilt: np.ndarray, light_x: np.ndarray, light_y: np.ndarray) -> None:
        self.img, self.cx, self.cy, self.scale = img, cx, cy, scale
        self.cos = 1 / np.sqrt(1 + tilt * tilt)
        self.sin = tilt * self.cos
        self.light_xy = light_x, light_y
        self.grid = _grid(img.shape[-1])
        self.px = 2 / (scale * img.shape[-1])  # one pixel, in face-frame units

    @contextmanager
    def region(self, y0: np.ndarray | float, y1: np.ndarray | float,
               x_max: np.ndarray | float) -> Iterator[_Region]:
        """Paint the part of each face's frame with ``y0 <= Y <= y1`` and ``|X| <= x_max``.

        Only a window of pixels around that box is painted. Everything outside would get
        exactly zero coverage, so the image is the same, but small features cost far less.
        """
        abs_sin = np.abs(self.sin)
        mid, half = (y0 + y1) / 2, (y1 - y0) / 2
        rows, n_rows = self._span(self.cy + self.scale * self.cos * mid,
                                  self.scale * (abs_sin * x_max + self.cos * half))
        cols, n_cols = self._span(self.cx - self.scale * self.sin * mid,
                                  self.scale * (self.cos * x_max + abs_sin * half))
        x = self.grid[cols[:, None, None] + np.arange(n_cols)]
        y = self.grid[rows[:, None, None] + np.arange(n_rows)[:, None]]
        X = (self.cos * (x - self.cx) + self.sin * (y - self.cy)) / self.scale
        Y = (self.cos * (y - self.cy) - self.sin * (x - self.cx)) / self.scale
        windows = sliding_window_view(self.img, (n_rows, n_cols), axis=(2, 3), writeable=True)
        faces = np.arange(len(rows))
        region = _Region(X, Y, self.light_xy, self.px, windows[:, faces, rows, cols])
        yield region
        windows[:, faces, rows, cols] = region.img

    def _span(self, centre: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, int]:
        """First pixel (per face) and common length of windows covering ``centre +- half``."""
        res = self.img.shape[-1]
        lo = (centre - half + 1) * (res / 2) - 0.5 - _MARGIN_PX
        hi = (centre + half + 1) * (res / 2) - 0.5 + _MARGIN_PX
        length = min(res, int(np.ceil(np.max(hi - lo))) + 2)
        return np.clip(np.floor(lo).astype(int), 0, res - length).ravel(), length


def _grid(res: int) -> np.ndarray:
    """Pixel-centre coordinates along one image axis, spanning ``[-1, 1]``."""
    return ((np.arange(res) + 0.5) * (2.0 / res) - 1.0).astype(np.float32)


def _ellipse(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse with half-axes ``a, b``.

    The implicit function ``(x/a)² + (y/b)² - 1`` divided by its gradient length: accurate near
    the boundary, which is all a one-pixel ramp needs, and far cheaper than the exact distance.
    Far from a thin ellipse it can underestimate, so it is never allowed below the distance to
    the bounding box (no faint streaks beyond the ends of a thin mouth or eyebrow).
    """
    xx, yy, ia2, ib2 = x * x, y * y, 1 / (a * a), 1 / (b * b)
    d = (xx * ia2 + yy * ib2 - 1) / (2 * np.sqrt(xx * (ia2 * ia2) + yy * (ib2 * ib2) + 1e-12))
    return np.maximum(d, np.maximum(np.abs(x) - a, np.abs(y) - b))


def _choose(u: np.ndarray, cuts: list[float], values: list[float]) -> np.ndarray:
    """``values[k]`` for the ``k``-th interval of ``cuts`` that ``u`` falls in (categorical draws)."""
    return np.asarray(values, np.float32)[np.searchsorted(cuts, u, side="right")]


def _box(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance to a box with half-sizes ``w, h`` and corners rounded with radius ``r``."""
    qx, qy = np.abs(x) - w + r, np.abs(y) - h + r
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _paint(draws: np.ndarray, res: int) -> np.ndarray:
    """Paint one chunk of faces; ``draws`` holds each face's uniforms. Returns ``(3, B, res, res)``."""
    p = _Draws(draws)

    # Background: a muted colour, plain or with a vertical or horizontal gradient.
    x, y = _grid(res)[None, None, :], _grid(res)[None, :, None]
    grey, chroma = p(0.25, 0.9), p(0.05, 0.35)
    bg1 = np.clip(grey + chroma * (np.stack([p(), p(), p()]) - 0.5), 0, 1)
    bg2 = bg1 * p(0.55, 1.25)
    kind = p()
    t = np.where(kind < 0.4, 0.0, np.where(kind < 0.7, (y + 1) / 2, (x + 1) / 2))
    img = bg1 + (bg2 - bg1) * t

    # Pose (offset, scale, roll) and a soft directional light, mostly from above.
    pose = p(*_CX), p(*_CY), p(*_SCALE), p(-_TILT, _TILT)
    lx, ly, strength = p(-1, 1), p(-1, 0.3), p(0.12, 0.3)
    strength = strength / (np.sqrt(lx * lx + ly * ly) + 1e-3)
    c = _Canvas(img, *pose, strength * lx, strength * ly)

    # Colours of this face.
    tone = p().ravel() * (len(_SKIN) - 1)
    i = np.minimum(tone.astype(int), len(_SKIN) - 2)
    f = (tone - i)[:, None]
    warmth = p(-0.03, 0.03) * np.array([1, 0, -1], np.float32)[:, None, None, None]
    skin = _rgb(_SKIN[i] * (1 - f) + _SKIN[i + 1] * f) * (1 + warmth)
    hair = np.clip(p.pick(_HAIR, _HAIR_P) * p(0.8, 1.15), 0, 1)
    clothes = np.stack([p(0.05, 0.9), p(0.05, 0.9), p(0.05, 0.9)])

    # Proportions: face ellipse (round to long) narrowing to the chin; hair volume and style.
    fa, fb, jaw = p(0.40, 0.49), p(0.53, 0.62), p(0.0, 0.35)
    eye_y, eye_x = p(-0.16, -0.06), p(0.16, 0.22)
    style, fringe = p(), p() < 0.25
    long, shaved = style < 0.38, style > 0.88  # long hair falls beside the face
    vol = np.where(long, 0.04 + 0.14 * p() ** 2, 0.01 + 0.1 * p() ** 2)
    ha, hb, hc = fa + 0.03 + vol, fb + 0.02 + 0.8 * vol, -0.06 - 0.5 * vol

    # Body, back to front: shoulders, long hair behind the neck, neck, ears.
    with c.region(0.69, 1.2, 1.25) as r:  # no image pixel lies lower than Y = 1.2
        r.paint(r.cover(_ellipse(r.X, r.Y - 1.32, p(1.0, 1.25), 0.62)), clothes, r.light)
    hair_end, hair_w = p(0.45, 1.1), ha * p(0.95, 1.1)
    with c.region(hc - hb, np.maximum(hair_end, hc + hb), np.maximum(ha, hair_w)) as r:
        back_d = np.minimum(_ellipse(r.X, r.Y - hc, ha, hb),
                            _box(r.X, r.Y - (hc + hair_end) / 2, hair_w, (hair_end - hc) / 2, 0.15))
        r.paint(r.cover(back_d) * long, hair * 0.8, r.light)
    neck_w = fa * p(0.45, 0.6)
    with c.region(0.25, 1.05, neck_w) as r:
        neck_shade = r.light * (0.72 + 0.25 * np.clip((r.Y - fb * 0.8) / 0.35, 0, 1))
        r.paint(r.cover(_box(r.X, r.Y - 0.65, neck_w, 0.4, neck_w * 0.9)), skin, neck_shade)
    with c.region(eye_y - 0.05, eye_y + 0.15, fa + 0.06) as r:
        ear_x, ear_y = np.abs(r.X) - fa - 0.005, r.Y - eye_y - 0.05
        r.paint(r.cover(_ellipse(ear_x, ear_y, 0.055, 0.1)) * ~long, skin * 0.92, r.light)
        r.paint(r.cover(_ellipse(ear_x + 0.01, ear_y, 0.025, 0.06)) * ~long * 0.5, skin * 0.7)

    # Face, shaded darker towards its rim, with rosy cheeks and a beard on some.
    nose_y, nose_w = p(0.12, 0.2), p(0.05, 0.08)
    with c.region(-fb, fb + 0.03, fa + 0.03) as r:
        X, Y = r.X, r.Y
        taper = 1 - jaw * np.clip(Y / fb, 0, 1) ** 2
        face_d = _ellipse(X / taper, Y, fa, fb) * taper
        rim = np.clip((X / (fa * taper)) ** 2 + (Y / fb) ** 2, 0, 1)
        r.paint(r.cover(face_d), skin, r.light * (1.04 - 0.22 * rim * rim))
        cheeks = _ellipse(np.abs(X) - eye_x * 1.1, Y - nose_y, 0.09, 0.06)
        r.paint(r.cover(cheeks, 0.06) * p(0, 0.3), _rgb([[0.85, 0.35, 0.35]]))
        beard = p() + 0.14 * long  # long-haired faces get no full beard
        beard_alpha = _choose(beard, [0.14, 0.22], [0.92, 0.35, 0.0])  # full, stubble, none
        beard_top = np.maximum(p(0.2, 0.3) - p(0.7, 1.3) * X * X, -0.05)  # up to sideburns
        r.paint(r.cover(np.maximum(face_d - 0.025, beard_top - Y)) * beard_alpha, hair * 0.9)

    # Nose, mouth (smiling, neutral or open with teeth showing) and moustache.
    mouth_y, mouth_w, lip_h = p(0.31, 0.38), p(0.10, 0.16), p(0.022, 0.036)
    with c.region(nose_y - 0.21, mouth_y + 0.1, 0.17) as r:
        X, Y = r.X, r.Y
        r.paint(r.cover(_ellipse(X, Y - nose_y, nose_w, nose_w * 0.55)) * 0.5, skin * 0.8)
        nostrils = _ellipse(np.abs(X) - nose_w * 0.5, Y - nose_y - 0.01, nose_w * 0.28, nose_w * 0.16)
        r.paint(r.cover(nostrils) * 0.8, skin * 0.45)
        ridge = _ellipse(X + np.sign(lx) * 0.035, Y - nose_y + 0.1, 0.012, 0.09)  # shadow side
        r.paint(r.cover(ridge, 0.02) * 0.4, skin * 0.75)

        expression = p()
        smile, opened = expression < 0.4, expression > 0.75
        bend = np.where(smile | opened, p(1.5, 3.5), p(-0.5, 0.6))
        open_h = np.where(opened, p(0.025, 0.055), 0.007)
        lip = skin * _rgb([[0.88, 0.6, 0.58]])
        lipstick = p()  # cubed: most lips natural, a few strongly red
        lip = lip + 0.8 * lipstick * lipstick * lipstick * (_rgb([[0.72, 0.16, 0.22]]) - lip)
        my = Y - mouth_y + bend * X * X
        r.paint(r.cover(_ellipse(X, my, mouth_w, lip_h + open_h)), lip)
        inner = r.cover(_ellipse(X, my, mouth_w * 0.85, open_h))
        r.paint(inner, _rgb([[0.25, 0.05, 0.06]]))
        r.paint(np.minimum(inner, r.cover(my + open_h * 0.25)) * opened, _rgb([[0.95, 0.94, 0.9]]))
        tash_alpha = _choose(beard, [0.14, 0.22, 0.3], [0.92, 0.35, 0.9, 0.0])
        tash = _ellipse(X, Y - mouth_y + lip_h + open_h + 0.025 - 0.8 * X * X, mouth_w * 0.95, 0.022)
        r.paint(r.cover(tash) * tash_alpha, hair * 0.9)

    # Eyes (lashes, white, iris, pupil, glint), eyebrows and glasses.
    glasses = p() < 0.2
    with c.region(eye_y - 0.27, eye_y + 0.17, np.where(glasses, fa + 0.06, 0.36)) as r:
        X, Y = r.X, r.Y
        ea = p(0.075, 0.105)
        eb = ea * p(0.42, 0.62)
        ex, ey = np.abs(X) - eye_x, Y - eye_y
        white_d = _ellipse(ex, ey, ea, eb)
        r.paint(r.cover(white_d - 0.01 + 0.1 * ey), _rgb([[0.1, 0.07, 0.06]]))  # thick on top
        white = r.cover(white_d)
        r.paint(white, _rgb([[0.95, 0.94, 0.92]]))
        gaze = p(-0.3, 0.3) * ea
        iris_r = eb * p(0.85, 1.05)
        iris_x = np.abs(X - gaze) - eye_x
        iris_d = np.sqrt(iris_x * iris_x + ey * ey)
        r.paint(np.minimum(r.cover(iris_d - iris_r), white), p.pick(_IRIS, _IRIS_P))
        r.paint(np.minimum(r.cover(iris_d - iris_r * 0.45), white), _rgb([[0.03, 0.03, 0.03]]))
        glint = np.sqrt(iris_x * iris_x + (ey + iris_r * 0.4) ** 2) - iris_r * 0.22
        r.paint(r.cover(glint) * 0.9, _rgb([[1.0, 1.0, 1.0]]))

        brow_len, brow_h = p(0.075, 0.11), p(0.012, 0.032)
        bx = ex - p(0.0, 0.02)
        by = ey + p(0.10, 0.15) + p(-0.3, 0.3) * bx + p(0.0, 0.03) * (1 - (bx / brow_len) ** 2)
        r.paint(r.cover(_ellipse(bx, by, brow_len, brow_h)), hair * 0.7 + 0.02)

        tint = _choose(p(), [0.15], [0.85, 0.12])  # sunglasses or clear lenses
        gw = np.minimum(ea + p(0.04, 0.07), eye_x - 0.025)
        gh, frame_t = eb + p(0.04, 0.07), p(0.006, 0.014)
        lens_d = _box(ex, ey - 0.005, gw, gh, np.minimum(gw, gh) * p(0.3, 1.0))
        bridge = _box(X, ey + gh * 0.3, eye_x - gw, frame_t, 0)
        arm_len = (fa + 0.05 - eye_x - gw) / 2
        arms = _box(ex - gw - arm_len, ey + gh * 0.4, arm_len, frame_t, 0)
        frame_d = np.minimum(np.minimum(np.abs(lens_d) - frame_t, bridge), arms)
        r.paint(r.cover(lens_d) * (glasses * tint), _rgb([[0.1, 0.12, 0.15]]))
        r.paint(r.cover(frame_d) * glasses, p.pick(_FRAME, _FRAME_P))

    # Hair over the head: a cap cut off below a hairline (side parting, fringe, receding).
    line = np.where(fringe, p(-0.27, -0.2), p(-0.42, -0.28))
    line = np.where(shaved, p(-0.5, -0.35), line)
    curve = np.where(fringe, p(0.2, 0.6), p(0.8, 1.5))
    sides = np.where(long, 0.2, p(-0.2, -0.06))
    with c.region(hc - hb, sides, ha) as r:
        X, Y = r.X, r.Y
        zigzag = X * p(12, 25)
        jag = np.abs(zigzag - np.floor(zigzag) - 0.5) * 0.06 * fringe
        hairline = np.minimum(line + curve * X * X + p(-0.15, 0.15) * X + jag, sides)
        alpha = np.minimum(r.cover(_ellipse(X, Y - hc, ha, hb)), r.cover(Y - hairline))
        r.paint(alpha * np.where(shaved, p(0.0, 0.5), 1.0), hair, r.light)
    return c.img
