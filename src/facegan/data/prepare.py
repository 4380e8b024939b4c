"""Pack a dataset once into a memory-mappable ``uint8`` ``.npy`` that training reads directly.

Decoding JPEGs every epoch would make a CPU-only machine spend most of its time in libjpeg, so
``prepare`` decodes, crops and resizes each image exactly once (on all cores) and streams the
results into ``(N, res, res, channels)`` uint8 rows. A JSON manifest next to the file
(``faces64.npy.json``) records where the data came from and which files were skipped and why.

Both files are written to a temporary name and renamed into place, so an interrupted run never
leaves a half-written dataset under the final name. :func:`resolve_dataset` caches prepared
files keyed by the source's fingerprint, so training on the same folder twice decodes nothing.

``crop="auto"`` means ``center`` for every kind of source: the full centred square is what the
PyTorch DCGAN recipe uses for CelebA as well, so results are comparable; the tighter CelebA face
box is there for users who ask for ``crop="celeba"`` explicitly.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

from facegan import checks
from facegan.data import procedural
from facegan.data.images import CROPS, BadImage, default_min_size, load_image
from facegan.data.sources import IdxSource, Source, hash_lines, open_source
from facegan.errors import FaceganError
from facegan.fileio import atomic_path, read_json, sweep_stale

FORMAT = "facegan-prepared-1"
CROP_CHOICES = ("auto", *CROPS)
DEFAULT_PROCEDURAL_COUNT = 10_000
MAX_RES = 2048  # 12 MB per RGB image: beyond any face net, and a 30000² typo would be 2.7 GB each
SUMMARY_SKIPPED_SHOWN = 10

# Images per worker task: enough to amortise IPC, few enough for a smooth progress bar, and
# capped in bytes so that high resolutions do not pile up gigabytes of results in flight.
_CHUNK = 64
_CHUNK_BYTES = 4 << 20
_HEADER_BYTES = 128  # fixed .npy header size, so the final shape can be rewritten in place


@dataclass(frozen=True)
class ProceduralSource:
    """Faces drawn by :func:`facegan.data.procedural.render_faces`: no files, no decoding."""

    count: int
    seed: int = 0
    kind: ClassVar[str] = "procedural"

    def __len__(self) -> int:
        return self.count

    def fingerprint(self) -> str:
        """Changes with the count, the seed and the renderer's code, so caches follow edits."""
        code = hashlib.sha256(Path(procedural.__file__).read_bytes()).hexdigest()
        return hash_lines([self.kind, str(self.count), str(self.seed), code])

    def render(self, lo: int, hi: int, res: int, channels: int) -> np.ndarray:
        return procedural.render_faces(hi - lo, res, seed=self.seed, channels=channels, start=lo)


@dataclass
class PreparedData:
    """A prepared dataset: ``images`` is a read-only memmap of shape (N, H, W, C), uint8."""

    images: np.memmap
    manifest: dict
    path: Path

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class _Chunk:
    images: np.ndarray  # (k, res, res, channels) for the kept indices, in order
    kept: list[int]
    skipped: list[tuple[int, str]]


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to turn a range of item indices into pixels (picklable)."""

    source: Source | ProceduralSource
    res: int
    channels: int
    crop: str
    min_size: int

    def run(self, bounds: tuple[int, int]) -> _Chunk:
        lo, hi = bounds
        if isinstance(self.source, ProceduralSource):
            rendered = self.source.render(lo, hi, self.res, self.channels)
            return _Chunk(rendered, list(range(lo, hi)), [])
        images, kept, skipped = [], [], []
        for i in range(lo, hi):
            try:
                data = self.source.read(i)
                images.append(load_image(data, self.res, self.channels, self.crop, self.min_size))
                kept.append(i)
            except BadImage as e:  # the sources' readers name every per-file failure this way
                skipped.append((i, str(e)))
        shape = (len(images), self.res, self.res, self.channels)
        return _Chunk(np.stack(images) if images else np.empty(shape, np.uint8), kept, skipped)


def manifest_path(path: str | Path) -> Path:
    """The manifest that belongs to a prepared file: ``faces64.npy`` -> ``faces64.npy.json``."""
    return Path(str(path) + ".json")


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEGAN_CACHE") or Path.home() / ".cache" / "facegan")


def prepare(
    src: str | Path | None,
    out: str | Path,
    res: int,
    channels: int = 3,
    crop: str = "auto",
    min_size: int | None = None,
    include_fake: bool = False,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Decode ``src`` into ``out`` (.npy) plus ``out.json`` and return the manifest.

    ``src`` is a folder, zip, IDX file, or ``None`` / ``"procedural"`` / ``"procedural:N"``.
    ``limit`` caps the number of packed images (the first ``limit`` usable ones in order).
    ``workers=None`` uses every core; ``workers=1`` decodes in this process.
    """
    out = checks.output_file("--out", out, f"faces{res}.npy")
    if out.suffix != ".npy":
        raise FaceganError(f"--out {out} must be a .npy file name, such as faces{res}.npy")
    _check_options(res, channels, limit, workers)
    source = _open(src, include_fake)
    return _pack(source, out, res, channels, crop, min_size, limit, workers, progress)


def open_prepared(path: str | Path) -> PreparedData:
    """Memory-map a prepared file read-only after checking it against its manifest.

    Its folder (the cache, or a ``prepare --out`` folder) is swept of the temporaries of dead
    writers first: a killed prepare leaves a file as large as the dataset, and on a cache hit
    nothing else would ever write there to sweep it.
    """
    path = Path(path).expanduser()
    sweep_stale(path.parent)
    meta = manifest_path(path)
    if not path.is_file():
        raise FaceganError(f"prepared dataset not found: {path}")
    if not meta.is_file():
        raise FaceganError(
            f"{path} has no manifest ({meta.name}); create it with `facegan prepare`"
        )
    try:
        manifest = read_json(meta)
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise FaceganError(
            f"cannot read prepared dataset {path}: {e}; run `facegan prepare` again"
        ) from None
    manifest = manifest if isinstance(manifest, dict) else {}
    res = manifest.get("res")
    expected = (manifest.get("count"), res, res, manifest.get("channels"))
    if manifest.get("format") != FORMAT or images.dtype != np.uint8 or images.shape != expected:
        raise FaceganError(
            f"{path} does not match its manifest {meta.name}; run `facegan prepare` again"
        )
    return PreparedData(images=images, manifest=manifest, path=path)


def resolve_dataset(
    src: str | Path | None,
    res: int,
    channels: int = 3,
    crop: str = "auto",
    cache_dir: str | Path | None = None,
    include_fake: bool = False,
    progress: bool = True,
) -> Path:
    """Return a prepared file for ``src`` at ``res``, preparing it into the cache if needed.

    A prepared ``.npy`` is used as is (and must match ``res``/``channels``); anything else is
    cached as ``{kind}-{fingerprint}-r{res}-c{channels}-{crop}.npy``, so a hit costs only a
    listing of the source, and any change to the source's files means a fresh prepare.
    """
    if src is not None and (str(src).endswith(".npy") or manifest_path(src).exists()):
        return _check_prepared(open_prepared(src), res, channels)
    source = _open(src, include_fake)
    crop = _resolve_crop(crop, source.kind)
    name = f"{source.kind}-{source.fingerprint()}-r{res}-c{channels}-{crop}.npy"
    cached = Path(cache_dir or default_cache_dir()).expanduser() / name
    try:
        return open_prepared(cached).path
    except FaceganError:
        _pack(source, cached, res, channels, crop, None, None, None, progress)
        return cached


def format_summary(manifest: dict) -> str:
    """A few human-readable lines describing a finished prepare."""
    res, skipped = manifest["res"], manifest["skipped"]
    lines = [
        f"source:     {manifest['source']} ({manifest['source_kind']})",
        f"packed:     {manifest['count']:,} images, {res}x{res}x{manifest['channels']}"
        f", crop {manifest['crop']}",
        f"skipped:    {manifest['skipped_count']:,}",
    ]
    lines += [f"  {s['name']}: {s['reason']}" for s in skipped[:SUMMARY_SKIPPED_SHOWN]]
    if manifest["skipped_count"] > SUMMARY_SKIPPED_SHOWN:
        lines.append(f"  ... and {manifest['skipped_count'] - SUMMARY_SKIPPED_SHOWN:,} more")
    lines += [f"output:     {manifest['output']}", f"took:       {manifest['seconds']:.1f} s"]
    return "\n".join(lines)


def is_built_in(src: str | Path | None) -> bool:
    """Whether ``src`` names the built-in procedural faces (None, ``procedural``, ``procedural:N``), not a path."""
    return src is None or str(src) == "procedural" or str(src).startswith("procedural:")


def absolute_source(src: str | None) -> str | None:
    """``src`` as an absolute path (a run's saved config then works from any directory); built-in data as is."""
    if is_built_in(src):
        return src
    return str(Path(src).expanduser().absolute())


def _open(src: str | Path | None, include_fake: bool) -> Source | ProceduralSource:
    """Open a real source, or parse ``None`` / ``procedural`` / ``procedural:N``."""
    if not is_built_in(src):
        return open_source(src, include_fake)
    text = "procedural" if src is None else str(src)
    count = text.partition(":")[2] or str(DEFAULT_PROCEDURAL_COUNT)
    if not count.isdigit() or int(count) == 0:
        raise FaceganError(
            f"bad procedural source {text!r}; use procedural or procedural:N with N > 0"
        )
    return ProceduralSource(int(count))


def check_res(res: int) -> None:
    """The resolution images can be prepared at (training and evaluation alike)."""
    checks.integer("--res", res, 4, MAX_RES)


def _check_options(res: int, channels: int, limit: int | None, workers: int | None) -> None:
    check_res(res)
    if channels not in (1, 3):
        raise FaceganError(f"--channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    if limit is not None:
        checks.integer("--limit", limit, 1)
    if workers is not None:
        checks.integer("--workers", workers, 1, 1024)


def _resolve_crop(crop: str, kind: str) -> str:
    if crop not in CROP_CHOICES:
        raise FaceganError(f"unknown crop {crop!r}; choose one of {', '.join(CROP_CHOICES)}")
    if kind == "procedural":
        return "none"  # rendered at the target size; there is nothing to crop
    return "center" if crop == "auto" else crop


def _check_prepared(data: PreparedData, res: int, channels: int) -> Path:
    have_res, have_ch = data.manifest["res"], data.manifest["channels"]
    if (have_res, have_ch) != (res, channels):
        fix = f"facegan prepare {data.manifest['source']} --res {res}"
        if channels != have_ch:
            fix += f" --channels {channels}"
        raise FaceganError(
            f"{data.path} holds {have_res}x{have_res}x{have_ch} images but "
            f"{res}x{res}x{channels} were requested; run `{fix}`"
        )
    return data.path


def _pack(
    source: Source | ProceduralSource,
    out: Path,
    res: int,
    channels: int,
    crop: str,
    min_size: int | None,
    limit: int | None,
    workers: int | None,
    progress: bool,
) -> dict:
    _check_options(res, channels, limit, workers)
    crop = _resolve_crop(crop, source.kind)
    if min_size is None:
        # IDX images are 28x28 by definition; a filter for stray thumbnails must not drop them all.
        min_size = 0 if isinstance(source, IdxSource) else default_min_size(res)
    procedural_src = isinstance(source, ProceduralSource)
    label = f"procedural:{source.count}" if procedural_src else str(source.root)
    job = _Job(source, res, channels, crop, min_size)
    started = time.monotonic()
    fingerprint = source.fingerprint()  # before any writing: whatever fails here leaves nothing behind
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        count, skipped = _fill(tmp, job, limit, workers, progress)
        if count == 0:
            reasons = "; ".join(f"{source.names[i]}: {r}" for i, r in skipped[:3])
            raise FaceganError(f"no usable images in {label} ({len(skipped)} skipped: {reasons})")
        manifest_path(out).unlink(missing_ok=True)  # never pair the new .npy with an old manifest
    manifest = {
        "format": FORMAT,
        "source": label,
        "source_kind": source.kind,
        "fingerprint": fingerprint,
        "count": count,
        "res": res,
        "channels": channels,
        "crop": crop,
        "min_size": min_size,
        "limit": limit,
        "skipped_count": len(skipped),
        "skipped": [{"name": source.names[i], "reason": r} for i, r in skipped],
        "output": str(out),
        "seconds": round(time.monotonic() - started, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(manifest_path(out)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return manifest


def _fill(
    tmp: Path, job: _Job, limit: int | None, workers: int | None, progress: bool
) -> tuple[int, list[tuple[int, str]]]:
    """Stream decoded chunks, in source order, into ``tmp`` as a .npy; return (count, skipped).

    The file is sized for every item up front (sparse until written) and its header is then
    rewritten for the number actually kept, so skipped images cost neither RAM nor a copy.
    """
    n = len(job.source)
    rows = n if limit is None else min(limit, n)
    sample = (job.res, job.res, job.channels)
    sample_bytes = job.res * job.res * job.channels
    with open(tmp, "r+b") as f:
        f.write(_npy_header((rows, *sample)))
        f.truncate(_HEADER_BYTES + rows * sample_bytes)
    out = np.memmap(tmp, np.uint8, "r+", offset=_HEADER_BYTES, shape=(rows, *sample))
    written, skipped = 0, []
    step = max(1, min(_CHUNK, _CHUNK_BYTES // sample_bytes))
    chunks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    with tqdm(total=n, unit="img", desc="prepare", disable=not progress, dynamic_ncols=True) as bar:
        for chunk in _run_chunks(job, chunks, workers):
            take = min(len(chunk.kept), rows - written)
            out[written : written + take] = chunk.images[:take]
            written += take
            # Past the limit, later skips in this chunk were never part of the dataset.
            stop = chunk.kept[take] if take < len(chunk.kept) else n
            skipped += [s for s in chunk.skipped if s[0] < stop]
            bar.update(len(chunk.kept) + len(chunk.skipped))
            bar.set_postfix(skipped=len(skipped), refresh=False)
            if written == rows:
                break
    out.flush()
    del out
    with open(tmp, "r+b") as f:
        f.write(_npy_header((written, *sample)))
        f.truncate(_HEADER_BYTES + written * sample_bytes)
    return written, skipped


def _run_chunks(job: _Job, chunks: list[tuple[int, int]], workers: int) -> Iterator[_Chunk]:
    """Yield chunk results in order; at most ``4 * workers`` are in flight to bound memory."""
    if workers <= 1:
        yield from map(job.run, chunks)
        return
    # fork where it exists: spawn would re-import the caller's __main__, which breaks any user
    # script without an `if __name__ == "__main__"` guard and costs a torch import per worker.
    # Workers only run Pillow/numpy code, never torch, so the parent's threads don't matter.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(job, os.getpid())
    )
    with pool:
        todo = iter(chunks)
        pending: deque[Future] = deque(
            pool.submit(_run_in_worker, c) for c in islice(todo, 4 * workers)
        )
        try:
            while pending:
                result = pending.popleft().result()
                following = next(todo, None)
                if following is not None:
                    pending.append(pool.submit(_run_in_worker, following))
                yield result
        finally:
            pool.shutdown(cancel_futures=True)


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job, parent: int) -> None:
    """Keep the job, and die with the parent: a SIGKILLed prepare must not leave decoders running.

    A killed parent cannot stop its pool, and workers blocked on the task queue would wait
    forever; a watchdog thread notices the re-parenting (POSIX) within a second and exits.
    """
    global _WORKER_JOB
    _WORKER_JOB = job

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="facegan-parent-watch").start()


def _run_in_worker(bounds: tuple[int, int]) -> _Chunk:
    assert _WORKER_JOB is not None, "worker used before _init_worker"
    return _WORKER_JOB.run(bounds)


def _npy_header(shape: Iterable[int]) -> bytes:
    """A .npy v1.0 header of exactly ``_HEADER_BYTES`` bytes for a C-order uint8 array."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    body = text.ljust(_HEADER_BYTES - 11) + b"\n"  # 11: magic 6, version 2, length 2, "\n" 1
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body

