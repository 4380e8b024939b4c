"""Decode one image and turn it into a square ``uint8`` training sample.

Real-world face folders contain everything: CMYK JPEGs, 16-bit PNGs, palette GIFs with
transparency, phone photos that rely on EXIF rotation, truncated downloads, text files named
``.jpg`` and the occasional decompression bomb. :func:`load_image` normalises all of them to
``(res, res, channels)`` and raises :class:`BadImage` for anything that should be skipped, so
one bad file never stops a long ``prepare`` run.

Resizing uses Lanczos (sharp, little aliasing) with ``reducing_gap=3``: large reductions first
go through an exact integer box reduction, which Pillow documents as practically
indistinguishable from a full Lanczos pass but much faster. Big JPEGs are additionally decoded
at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (``Image.draft``) while at least twice the
target resolution remains, so a 12-megapixel photo costs little more than a thumbnail.
"""

from __future__ import annotations

import math
import warnings
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000
"""Images declaring more pixels than this are refused before decoding (decompression bombs)."""

MAX_FILE_BYTES = 64 << 20
"""Files (and zip members) larger than this are refused before reading: a 50-megapixel JPEG is
about 25 MB, while a 1 GiB "photo" is an attack or a mistake that would be read whole."""

MAX_ASPECT = 4.0
"""Training images more elongated than 4:1 are refused: their centre square is a sliver of the
picture (a 4000×10 strip would become a 10×10 crop blown up to the training size)."""

CROPS = ("center", "celeba", "none")

# The CelebA "aligned" images are 178x218 with the eyes at fixed positions. This 140x140 box
# centred at (89, 121) is the tight face crop used by many GAN papers: it drops most of the
# background and hair that the plain centre square keeps.
CELEBA_SIZE = (178, 218)
CELEBA_BOX_CENTER = (89, 121)
CELEBA_BOX_SIDE = 140

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class BadImage(Exception):
    """A file that cannot become a training sample; the caller skips it and records why."""


def default_min_size(res: int) -> int:
    """Smallest accepted shorter side: icons and thumbnails upscaled 4x+ only add blur."""
    return max(8, res // 4)


def crop_box(width: int, height: int, crop: str) -> tuple[float, float, float, float]:
    """Return the (left, top, right, bottom) region of a ``width``x``height`` image to keep.

    ``center`` is the largest centred square; ``celeba`` the CelebA face box scaled to the
    image size; ``none`` the whole image (squashed to a square by the resize).
    """
    if crop == "none":
        return (0.0, 0.0, float(width), float(height))
    if crop == "center":
        side = float(min(width, height))
        cx, cy = width / 2, height / 2
    elif crop == "celeba":
        sx, sy = width / CELEBA_SIZE[0], height / CELEBA_SIZE[1]
        side = CELEBA_BOX_SIDE * min(sx, sy)
        cx, cy = CELEBA_BOX_CENTER[0] * sx, CELEBA_BOX_CENTER[1] * sy
    else:
        raise ValueError(f"unknown crop {crop!r}; expected one of {', '.join(CROPS)}")
    left = min(max(cx - side / 2, 0.0), width - side)
    top = min(max(cy - side / 2, 0.0), height - side)
    return (left, top, left + side, top + side)


def load_image(
    data: bytes | np.ndarray,
    res: int,
    channels: int = 3,
    crop: str = "center",
    min_size: int | None = None,
) -> np.ndarray:
    """Decode ``data`` (encoded bytes, or an HxW / HxWxC uint8 array) to ``(res, res, channels)``.

    Raises :class:`BadImage` for empty, corrupt, truncated, oversized or too-small inputs.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    min_size = default_min_size(res) if min_size is None else min_size
    if isinstance(data, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(data))
        _check_size(img, min_size, MAX_ASPECT)
    else:
        img = _decode(data, res, crop, min_size, MAX_ASPECT)
    img = _to_rgb_or_gray(img, channels)
    box = crop_box(img.width, img.height, crop)
    out = img.resize((res, res), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    arr = np.asarray(out, dtype=np.uint8)
    return arr.reshape(res, res, channels)


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
    """Decode at full size, with no crop or resize, to (H, W, channels) uint8: the input side of upscaling.

    The same normalisation as :func:`load_image` (EXIF rotation, alpha over white, 16-bit
    stretching, decompression-bomb and corruption checks); raises :class:`BadImage`.
    """
    img = _decode(data, 0, "none", 1, None)
    return np.asarray(_to_rgb_or_gray(img, channels), dtype=np.uint8).reshape(img.height, img.width, channels)


def _check_size(img: Image.Image, min_size: int, max_aspect: float | None) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise BadImage(f"decompression bomb: {w}x{h} exceeds {MAX_PIXELS // 1_000_000} MP")
    if min(w, h) < min_size:
        raise BadImage(f"too small: {w}x{h}")
    if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
        raise BadImage(f"too elongated: {w}x{h} (more than {max_aspect:g}:1)")


def _decode(data: bytes, res: int, crop: str, min_size: int, max_aspect: float | None) -> Image.Image:
    """Open, size-check, draft, load and EXIF-rotate; map every decoder failure to BadImage.

    Pillow plugins raise many exception types on malformed input (OSError, SyntaxError,
    ValueError, struct.error, ...), so anything raised while parsing untrusted bytes is a
    property of the file, not a bug here.
    """
    if len(data) == 0:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(BytesIO(data))
        _check_size(img, min_size, max_aspect)
        if res:  # res 0: keep full size (decode_image)
            _draft(img, res, crop)
        img.load()
        return ImageOps.exif_transpose(img)
    except BadImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except Exception as e:  # noqa: BLE001 - see docstring
        message = str(e) or type(e).__name__
        reason = "truncated" if "truncated" in message.lower() else f"corrupt: {message}"
        raise BadImage(reason) from None


def _draft(img: Image.Image, res: int, crop: str) -> None:
    """Let JPEG decode at a reduced scale while the crop keeps >= 2x the target resolution."""
    left, top, right, bottom = crop_box(img.width, img.height, crop)
    factor = min(right - left, bottom - top) / (2 * res)
    if factor >= 2:
        img.draft(None, (math.ceil(img.width / factor), math.ceil(img.height / factor)))


def _to_rgb_or_gray(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 'RGB' (channels=3) or 'L' (channels=1).

    Transparent pixels become white (a black background would teach the GAN dark halos), and
    high-bit-depth images are stretched over their actual range because clipping a 16-bit scan
    to 0..255 turns it almost entirely white.
    """
    target = "RGB" if channels == 3 else "L"
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    elif img.mode in _HIGH_DEPTH_MODES:
        img = Image.fromarray(_stretch_to_uint8(np.asarray(img)))
    try:
        return img.convert(target)
    except ValueError:
        raise BadImage(f"unsupported mode {img.mode}") from None


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Linearly map [min, max] to [0, 255]; a constant image maps to black."""
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.round(scaled).astype(np.uint8)
