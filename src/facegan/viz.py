"""Pictures of a run: image grids and loss curves, drawn with Pillow alone.

Pillow is already a core dependency, so a run folder always gets its PNGs — no plotting
library to install first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, C) → one uint8 (rows·H, cols·W, C) mosaic, ``nrow`` images per row."""
    n, h, w, c = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = images[i]
    return out


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 1|3) array as PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None) -> Path:
    return save_image(grid(images, nrow), path)


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics JSONL file (missing file → empty list)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def loss_curve(records: list[dict], path: str | Path, size: tuple[int, int] = (720, 360)) -> Path:
    """Plot loss_D and loss_G against images seen, as a PNG with axes and a legend."""
    W, H = size
    left, right, top, bottom = 56, 16, 16, 36
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    series = {"loss_D": (214, 39, 40), "loss_G": (31, 119, 180)}
    xs = [r["images"] for r in records]
    ys = [r[k] for r in records for k in series if math.isfinite(r.get(k, math.nan))]
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    if len(xs) >= 2 and ys:
        x0, x1 = min(xs), max(xs) or 1
        y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
        px = lambda x: left + (x - x0) / max(x1 - x0, 1e-9) * (W - left - right)  # noqa: E731
        py = lambda y: H - bottom - (y - y0) / max(y1 - y0, 1e-9) * (H - top - bottom)  # noqa: E731
        for k, colour in series.items():
            pts = [(px(r["images"]), py(r[k])) for r in records if math.isfinite(r.get(k, math.nan))]
            if len(pts) >= 2:
                d.line(pts, fill=colour, width=2)
        for t in range(5):
            yv = y0 + (y1 - y0) * t / 4
            d.text((4, py(yv) - 6), f"{yv:.2f}", fill="black")
        d.text((left, H - bottom + 6), f"{x0:,}", fill="black")
        d.text((W - right - 90, H - bottom + 6), f"{x1:,} images", fill="black")
    for i, (k, colour) in enumerate(series.items()):
        d.line([(W - right - 110, top + 12 + 14 * i), (W - right - 90, top + 12 + 14 * i)], fill=colour, width=3)
        d.text((W - right - 84, top + 6 + 14 * i), k, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
