"""Pictures of a run: image grids, loss curves and the training-progress animation.

Pillow is already a core dependency, so a run folder always gets its PNGs and its GIF — no
plotting library to install first. The richer curves (smoothed losses, D outputs, FID) need
matplotlib and live in :mod:`facegan.plots`; an MP4 needs imageio-ffmpeg. Both are optional
extras, used when importable and skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import re
import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from facegan import plots
from facegan.errors import FaceganError
from facegan.fileio import atomic_path, flush_to_disk, parse_json, read_json, write_bytes_atomic

PLOTS_NOTE = "note: pip install 'facegan[plots]' enables curves.png (smoothed losses, D outputs, FID)"
VIDEO_NOTE = "writing .mp4 needs imageio-ffmpeg: pip install 'facegan[video]', or write a .gif"
CHUNK = 16  # images per writer task: few enough tasks to keep Python overhead low, enough to balance threads
MAX_FRAMES = 100  # progress frames kept: rebuilding the GIF at every draw stays cheap on long runs
FRAME_WIDTH = (256, 512)  # progress frames are scaled into this width range, so labels stay legible
_STEP_PNG = re.compile(r"^step-(\d+)\.png$")
_noted: set[str] = set()


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
    """Write a uint8 (H, W, 1|3) array as PNG, atomically: a run killed mid-write leaves no
    truncated grid for the resumed run's animation to choke on."""
    return write_bytes_atomic(Path(path), encode_png(array))


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 (H, W, 1|3) array as the bytes of a PNG file (Pillow's defaults: zlib level 6)."""
    return encode_image(array, "png")


IMAGE_FORMATS = {"png": dict(format="PNG"), "webp": dict(format="WEBP", lossless=True, quality=80, method=4),
                 "jpeg": dict(format="JPEG", quality=95)}
"""How each format is written: PNG and lossless WebP keep every pixel, JPEG at quality 95."""


def encode_image(array: np.ndarray, fmt: str = "png", png_level: int = 6) -> bytes:
    """A uint8 (H, W, 1|3) array as the bytes of an image file; the same pixels always give the same bytes.

    ``png_level`` is zlib's effort for PNG: 6 (Pillow's default) for files, 1 where encoding time
    matters more than 20 % of size (the service: 4× faster on a 64² face, docs/benchmarks.md).
    """
    buf = io.BytesIO()
    options = {**IMAGE_FORMATS[fmt], **({"compress_level": png_level} if fmt == "png" else {})}
    to_pil(array).save(buf, **options)
    return buf.getvalue()


class ImageWriter:
    """Many PNG files written by a pool of threads, so `facegan generate` runs at the generator's pace.

    Pillow's PNG encoder releases the GIL, so the threads encode in parallel. Where the generator
    runs on the same CPU (``overlap=False``), G and the writers take turns: :meth:`write` returns
    when its batch is written, so G has every core for the next one — G's OpenMP threads and
    encoder threads on the same cores slow each other down more than they overlap
    (docs/benchmarks.md). With G on a GPU (``overlap=True``) :meth:`write` returns at once and
    the next batch is computed while this one is written, with at most two batches in flight, so
    memory stays bounded.

    Each file is encoded in memory, written under a temporary name and renamed: a killed run
    leaves only whole PNGs. :meth:`close` waits for all of them and makes them durable with one
    flush, instead of two fsyncs per file, which cost more than encoding a 64² face.
    """

    def __init__(self, workers: int | None = None, overlap: bool = False) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.overlap = overlap
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="png")
        self._batches: deque[list[Future]] = deque()
        self._paths: list[Path] = []

    def write(self, images: np.ndarray, paths: Sequence[Path]) -> None:
        """Write ``images[k]`` to ``paths[k]``: done on return, or (overlap) queued behind at most two batches."""
        if len(images) != len(paths):
            raise ValueError(f"{len(images)} images for {len(paths)} paths")
        self._batches.append([self._pool.submit(_write_pngs, images[s:s + CHUNK], paths[s:s + CHUNK])
                              for s in range(0, len(paths), CHUNK)])
        self._paths.extend(paths)
        while len(self._batches) > (2 if self.overlap else 0):
            _wait_all(self._batches.popleft())

    def drain(self) -> None:
        """Wait until every queued image is on disk (the first write error is raised here)."""
        while self._batches:
            _wait_all(self._batches.popleft())

    def close(self) -> None:
        """Drain, flush everything written to disk and stop the threads."""
        self.drain()
        flush_to_disk(self._paths)
        self._pool.shutdown()

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # Ctrl-C or an error: drop what has not started; files already written stay whole
            self._pool.shutdown(wait=True, cancel_futures=True)


def _write_pngs(images: np.ndarray, paths: Sequence[Path]) -> None:
    for image, path in zip(images, paths):
        try:
            write_bytes_atomic(path, encode_png(image), durable=False)
        except OSError as e:
            raise FaceganError(f"cannot write {path}: {e.strerror or e}") from None


def _wait_all(futures: list[Future]) -> None:
    for f in futures:
        f.result()


def to_pil(array: np.ndarray) -> Image.Image:
    """A uint8 (H, W, 1|3) array as a Pillow image (mode L or RGB)."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None) -> Path:
    return save_image(grid(images, nrow), path)


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics JSONL file (missing file → empty list).

    Lines that are not such a record (:func:`_is_record`) — the torn last line a crash or a full
    disk leaves, or an edited one — are skipped: the records before them are intact, and a
    resume rewrites the file without them.
    """
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            rec = parse_json(line)
        except ValueError:
            continue
        if _is_record(rec):
            records.append(rec)
    return records


def _is_record(rec: object) -> bool:
    """A metrics line as facegan writes them: integer step and images, every other value a number."""
    return (isinstance(rec, dict) and all(isinstance(rec.get(k), int) for k in ("step", "images"))
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rec.values()))


TRAINING_SERIES = {"loss_D": (214, 39, 40), "loss_G": (31, 119, 180)}


def loss_curve(records: list[dict], path: str | Path, size: tuple[int, int] = (720, 360),
               series: dict[str, tuple[int, int, int]] | None = None, x_key: str = "images") -> Path:
    """Plot loss_D and loss_G (or ``series``) against images seen (or ``x_key``), as a PNG with axes and a legend."""
    with atomic_path(Path(path)) as tmp:
        loss_curve_image(records, size, series or TRAINING_SERIES, x_key).save(tmp, format="PNG")
    return Path(path)


def loss_curve_image(records: list[dict], size: tuple[int, int] = (720, 360),
                     series: dict[str, tuple[int, int, int]] = TRAINING_SERIES, x_key: str = "images") -> Image.Image:
    """The :func:`loss_curve` picture itself (the report embeds it without writing a file); ``series``
    (key → colour) against ``x_key`` draws other curves, e.g. a projection's loss against its steps."""
    W, H = size
    left, right, top, bottom = 56, 16, 16, 36
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [r[x_key] for r in records]
    ys = [r[k] for r in records for k in series if math.isfinite(r.get(k, math.nan))]
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    if len(xs) >= 2 and ys:
        x0, x1 = min(xs), max(xs) or 1
        y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
        px = lambda x: left + (x - x0) / max(x1 - x0, 1e-9) * (W - left - right)  # noqa: E731
        py = lambda y: H - bottom - (y - y0) / max(y1 - y0, 1e-9) * (H - top - bottom)  # noqa: E731
        for k, colour in series.items():
            pts = [(px(r[x_key]), py(r[k])) for r in records if math.isfinite(r.get(k, math.nan))]
            if len(pts) >= 2:
                d.line(pts, fill=colour, width=2)
        for t in range(5):
            yv = y0 + (y1 - y0) * t / 4
            d.text((4, py(yv) - 6), f"{yv:.2f}", fill="black")
        d.text((left, H - bottom + 6), f"{x0:,}", fill="black")
        d.text((W - right - 90, H - bottom + 6), f"{x1:,} {x_key}", fill="black")
    for i, (k, colour) in enumerate(series.items()):
        d.line([(W - right - 110, top + 12 + 14 * i), (W - right - 90, top + 12 + 14 * i)], fill=colour, width=3)
        d.text((W - right - 84, top + 6 + 14 * i), k, fill="black")
    return img


def update_run_pictures(run: str | Path) -> None:
    """Redraw the pictures that sum up a run so far; training calls this after every grid it saves.

    Writes ``loss_curve.png`` (Pillow, always), ``curves.png`` (matplotlib; without it a note
    once per process), ``progress.gif`` (always) and ``progress.mp4`` (with imageio-ffmpeg).
    The grids in samples/ stay clean — exactly the faces ``generate --seed`` draws — so the
    "step N · M images" labels go on the animation's frames instead.
    """
    run = Path(run)
    records = read_metrics(run / "metrics.jsonl")
    loss_curve(records, run / "loss_curve.png")
    if plots.available():
        write_bytes_atomic(run / "curves.png", plots.curves_png(records))
    else:
        note_once(PLOTS_NOTE)
    frames = progress_frames(run)
    if frames:
        save_animation(frames, run / "progress.gif", fps=4, hold_last_s=2.0)
        if video_available():
            save_animation(frames, run / "progress.mp4", fps=4, hold_last_s=2.0)


def step_grids(run: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every fixed-noise grid in ``run/samples``, oldest first."""
    folder = Path(run) / "samples"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.png") if (m := _STEP_PNG.match(p.name)) and p.is_file()]
    return sorted(found)


def progress_frames(run: str | Path) -> list[Image.Image]:
    """The run's grids as labelled animation frames, oldest first.

    A long run keeps at most MAX_FRAMES of them, evenly spaced with the first and the last
    always in, so rebuilding the animation at every draw costs the same late in a run as early.
    """
    grids = step_grids(run)
    if len(grids) > MAX_FRAMES:
        grids = [grids[round(i * (len(grids) - 1) / (MAX_FRAMES - 1))] for i in range(MAX_FRAMES)]
    per_step = _images_per_step(run)
    frames = []
    for step, path in grids:
        try:
            with Image.open(path) as img:
                frames.append(label_frame(img, step, per_step))
        except (OSError, ValueError, SyntaxError):  # a damaged grid costs its frame, not the animation
            continue
    return frames


def label_frame(img: Image.Image, step: int, images_per_step: int | None = None) -> Image.Image:
    """``img`` scaled into FRAME_WIDTH (nearest-neighbour up, so faces stay crisp) over a label strip."""
    img = img.convert("RGB")
    lo, hi = FRAME_WIDTH
    if img.width < lo:
        k = math.ceil(lo / img.width)
        img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    elif img.width > hi:
        img = img.resize((hi, round(img.height * hi / img.width)), Image.Resampling.LANCZOS)
    text = f"step {step:,}" + (f" · {step * images_per_step:,} images" if images_per_step else "")
    strip = 24
    out = Image.new("RGB", (img.width, img.height + strip), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    font = _font(14)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((out.width - right + left) / 2 - left, img.height + (strip - bottom + top) / 2 - top), text,
              fill="black", font=font)
    return out


def save_animation(frames: Sequence[Image.Image], path: str | Path, fps: float, hold_last_s: float = 0.0) -> Path:
    """Write equally sized frames as a looping ``.gif`` or an ``.mp4`` (H.264), atomically.

    ``hold_last_s`` shows the last frame longer, so a viewer sees where the sequence ends.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_bytes_atomic(path, encode_gif(frames, fps, hold_last_s))
    if suffix == ".mp4":
        return _write_mp4(frames, path, fps, hold_last_s)
    raise FaceganError(f"an animation is a .gif or an .mp4, not {path.name}")


def encode_gif(frames: Sequence[Image.Image], fps: float, hold_last_s: float = 0.0) -> bytes:
    """Frames as the bytes of a GIF that loops forever (the report embeds these directly)."""
    durations = [round(1000 / fps)] * len(frames)
    durations[-1] += round(hold_last_s * 1000)
    # fast octree: 50× faster than Pillow's default median cut here, and less banding on faces
    paletted = [f if f.mode in ("L", "P") else f.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
                for f in frames]
    buf = io.BytesIO()
    paletted[0].save(buf, format="GIF", save_all=True, append_images=paletted[1:], duration=durations, loop=0)
    return buf.getvalue()


def video_available() -> bool:
    """Whether ``.mp4`` files can be written (the optional imageio-ffmpeg package, which ships ffmpeg)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def require_video() -> None:
    """Fail early, with the fix in one line, when an .mp4 is asked for but cannot be written."""
    if not video_available():
        raise FaceganError(VIDEO_NOTE)


def _write_mp4(frames: Sequence[Image.Image], path: Path, fps: float, hold_last_s: float) -> Path:
    """H.264 in yuv420p (plays everywhere), frames padded white to multiples of 16 rather than rescaled."""
    require_video()
    import imageio_ffmpeg

    rgb = [_pad16(np.asarray(f.convert("RGB"))) for f in frames]
    rgb += [rgb[-1]] * round(hold_last_s * fps)
    h, w = rgb[0].shape[:2]
    with atomic_path(path) as tmp:  # the temporary name has no .mp4 suffix: name the container
        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", output_params=[
            "-f", "mp4", "-preset", "veryfast", "-movflags", "+faststart"])
        writer.send(None)
        for frame in rgb:
            writer.send(frame)
        writer.close()
    return path


def _pad16(a: np.ndarray) -> np.ndarray:
    """Pad (H, W, 3) on the bottom and right with white up to multiples of 16 (H.264 macroblocks)."""
    h, w = a.shape[:2]
    return np.pad(a, ((0, -h % 16), (0, -w % 16), (0, 0)), constant_values=255)


def _images_per_step(run: Path) -> int | None:
    """Real images shown per step (batch × processes) from the run's config.json; None without one."""
    try:
        cfg = read_json(Path(run) / "config.json")
    except (OSError, ValueError):
        return None
    batch, world = (cfg.get("batch"), cfg.get("world_size", 1)) if isinstance(cfg, dict) else (None, None)
    return batch * world if isinstance(batch, int) and isinstance(world, int) else None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (Pillow ≥ 10.1), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0 has no sized default font
        return ImageFont.load_default()


def note_once(message: str) -> None:
    """Print ``message`` to stderr the first time only (training draws hundreds of times)."""
    if message not in _noted:
        _noted.add(message)
        tqdm.write(message, file=sys.stderr)
