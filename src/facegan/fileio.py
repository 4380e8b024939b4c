"""Crash-safe file writes, shared by everything that must never leave a half-written file.

Checkpoints, prepared datasets, their manifests, feature caches and generation manifests are all
written under a temporary name in the destination folder, fsynced and renamed: a rename within a
folder is atomic, so a process killed at any instant leaves either the old file or the new one.
Generated faces, thousands of small files, are renamed the same way but flushed to disk once
for the whole set (:func:`write_bytes_renamed`, :func:`flush_to_disk`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync_dir(d: Path) -> None:
    """Persist the rename itself (POSIX); skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(final: Path) -> Path:
    """A hidden, unique name beside ``final``: same folder (so the rename is atomic), never clashing."""
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success fsync it and rename it into place.

    On any failure (including Ctrl-C) the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(final)
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(final.parent)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write a whole file atomically (pictures are rewritten while a viewer may have them open)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a small text file (JSON manifests, results) atomically."""
    return write_bytes_atomic(path, text.encode())


def write_bytes_renamed(path: Path, data: bytes) -> None:
    """Write a file under a temporary name, then rename it: never half-written after a kill.

    Unlike :func:`atomic_path` nothing is fsynced here — two fsyncs per file cost more than
    encoding a small PNG — so the file is only durable after :func:`flush_to_disk`; bulk
    writers (``facegan generate``) call that once before writing their manifest.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def flush_to_disk(paths: list[Path]) -> None:
    """Make files written by :func:`write_bytes_renamed` durable: one ``sync`` where POSIX has it."""
    if hasattr(os, "sync"):
        os.sync()
        return
    for p in paths:  # Windows: no global sync; fsync each file (needs a writable handle there)
        with open(p, "r+b") as f:
            os.fsync(f.fileno())
