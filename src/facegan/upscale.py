"""Using a trained upscaler: image files and folders, generated faces, and the held-out evaluation.

An upscaler is fully convolutional, so it takes images of any size; images of one size are
batched together. Like a generator it is read from safetensors only, so loading one never runs
code, and an upscaler run is told apart from a GAN run by its checkpoint's "kind".
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegan import metrics, viz
from facegan.data.images import BadImage, decode_image
from facegan.data.loader import split
from facegan.data.prepare import open_prepared
from facegan.data.sources import IMAGE_EXTENSIONS, read_file
from facegan.errors import FaceganError
from facegan.metrics.pixel import detail_energy, upscale_held
from facegan.models.srresnet import SRGenerator

MAX_OUTPUT_PIXELS = 64_000_000  # a 16k×4k result is a mistake, not a face: refuse it before allocating
PENDING_BYTES = 64 << 20  # decoded inputs held back while waiting for a batch of their size


def upscale_image(G: SRGenerator, img: np.ndarray, tile: int = 192) -> np.ndarray:
    """One uint8 (h, w, C) image of any size → (h·scale, w·scale, C), in tiles of tile² input pixels.

    Each tile is upscaled with :attr:`SRGenerator.reach` pixels of margin around it, so the result
    matches upscaling the whole image (within one level: convolution kernels may round differently at
    another size) while the activations stay bounded: a 2048² photo at ×2 needs a 192² tile's memory,
    not 10 GB.
    """
    h, w, c = img.shape
    if h <= tile and w <= tile:
        return G.upscale(img[None])[0]
    s, m = G.cfg.scale, G.reach
    out = np.empty((h * s, w * s, c), np.uint8)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            y0, x0, y1, x1 = max(0, y - m), max(0, x - m), min(h, y + tile + m), min(w, x + tile + m)
            up = G.upscale(img[None, y0:y1, x0:x1])[0]
            th, tw = min(tile, h - y), min(tile, w - x)
            out[y * s:(y + th) * s, x * s:(x + tw) * s] = up[(y - y0) * s:(y - y0 + th) * s, (x - x0) * s:(x - x0 + tw) * s]
    return out


def check_scale(G: SRGenerator, scale: int | None) -> None:
    """A one-line error when the user asks for a factor the model was not trained for."""
    if scale is not None and scale != G.cfg.scale:
        raise FaceganError(f"this upscaler was trained for ×{G.cfg.scale}, not ×{scale}; "
                           f"train a ×{scale} one with facegan train-sr --scale {scale}")


def input_files(src: Path) -> list[Path]:
    """``src`` itself, or every entry with an image suffix under the folder ``src`` (recursively, sorted).

    Linked folders are not followed (a link loop cannot trap the walk); an entry that is not a
    regular file (a pipe, a dangling link) is listed, so reading it names it as skipped.
    """
    if src.is_dir():
        return sorted(Path(d) / n for d, _, names in os.walk(src) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if src.exists() or src.is_symlink():
        return [src]
    raise FaceganError(f"input not found: {src}")


def upscale_files(G: SRGenerator, src: str | Path, out_dir: str | Path, batch: int = 64,
                  progress: bool = True) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Upscale an image file or a folder of them into ``out_dir`` as PNGs (folder structure kept).

    Returns (written files, [(skipped file, why)]): an unreadable or oversized file is named and
    skipped, never fatal for the rest. Images of one size are batched together; memory stays
    bounded for any number of files, since pending images are upscaled as soon as a batch is
    full or they hold PENDING_BYTES in all.
    """
    src, out_dir = Path(src), Path(out_dir)
    files = input_files(src)
    if not files:
        raise FaceganError(f"no images ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}) in {src}")
    s = G.cfg.scale
    pending: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
    skipped: list[tuple[Path, str]] = []
    written: list[Path] = []
    held = 0  # bytes in pending

    def flush(size: tuple[int, int]) -> None:
        nonlocal held
        group = pending.pop(size)
        held -= sum(img.nbytes for _, img in group)
        for (f, _), up in zip(group, G.upscale(np.stack([img for _, img in group]), batch)):
            rel = f.relative_to(src) if src.is_dir() else Path(f.name)
            written.append(viz.save_image(up, out_dir / rel.with_suffix(".png")))

    with tqdm(total=len(files), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for f in files:
            bar.update(1)
            try:
                img = decode_image(read_file(f), G.cfg.channels)
            except BadImage as e:
                skipped.append((f, str(e)))
                continue
            if img.shape[0] * img.shape[1] * s * s > MAX_OUTPUT_PIXELS:
                skipped.append((f, f"too large: {img.shape[1]}×{img.shape[0]} would become over {MAX_OUTPUT_PIXELS // 1_000_000} MP"))
                continue
            pending.setdefault(img.shape[:2], []).append((f, img))
            held += img.nbytes
            if len(pending[img.shape[:2]]) == batch:
                flush(img.shape[:2])
            elif held > PENDING_BYTES:
                for size in list(pending):
                    flush(size)
        for size in list(pending):
            flush(size)
    return written, skipped


def evaluate_heldout(G: SRGenerator, data: str | Path, holdout: int, n: int | None = None,
                     batch: int = 64, names: tuple[str, ...] = metrics.PAIRED) -> dict[str, float]:
    """The paired metrics ``names`` (PSNR, SSIM: facegan.metrics) and fine detail of this upscaler and of
    bicubic on the run's held-out split.

    The standard protocol: each held-out image is downscaled (antialiased bicubic, 8-bit), then
    upscaled back and compared with the original. "detail" is the images' total
    :func:`detail_energy` over the truth's (1.0 = as much edge and texture energy as the photos).
    """
    names = metrics.check(names)
    if not all(metrics.METRICS[m].pairs for m in names):
        raise FaceganError(f"an upscaler is measured with {', '.join(metrics.PAIRED)}, not {', '.join(names)}")
    images = open_prepared(data).images
    held = split(len(images), holdout)[1][:n]
    device = next(G.parameters()).device
    sums: dict[str, float] = defaultdict(float)
    for i in range(0, len(held), batch):
        hr = np.asarray(images[held[i : i + batch]])
        _, bic, ours = upscale_held(G, hr, G.cfg.scale, device)
        for suffix, out in (("", ours), ("_bicubic", bic)):
            for k, v in metrics.compute(names, metrics.MetricInput(pairs=(out, hr))).items():
                sums[k + suffix] += v * len(hr)  # batch means, weighted: the mean over every held-out image
            sums["detail" + suffix] += float(detail_energy(out).sum())
        sums["detail_truth"] += float(detail_energy(hr).sum())
    truth = sums.pop("detail_truth")
    return {"n": len(held), **{k: v / len(held) for k, v in sums.items() if not k.startswith("detail")},
            "detail": sums["detail"] / truth, "detail_bicubic": sums["detail_bicubic"] / truth}
