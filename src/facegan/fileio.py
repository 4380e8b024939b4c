"""Crash-safe file writes, shared by everything that must never leave a half-written file.

Checkpoints, prepared datasets, their manifests, feature caches and generation manifests are all
written under a temporary name in the destination folder, fsynced and renamed: a rename within a
folder is atomic, so a process killed at any instant leaves either the old file or the new one.
Generated faces, thousands of small files, are renamed the same way but flushed to disk once
for the whole set (``durable=False``, then :func:`flush_to_disk`).
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


@contextmanager
def atomic_path(final: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success fsync it and rename it into place.

    On any failure (including Ctrl-C) the temporary file is removed and ``final`` is untouched.
    ``durable=False`` skips the two fsyncs — for thousands of small files, where they cost more
    than writing the file — leaving the rename's atomicity against a killed process; such files
    are on disk after :func:`flush_to_disk`, which bulk writers call once before their manifest.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(final.parent)


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> Path:
    """Write a whole file atomically (pictures are rewritten while a viewer may have them open)."""
    with atomic_path(Path(path), durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a small text file (JSON manifests, results) atomically."""
    return write_bytes_atomic(path, text.encode())


def flush_to_disk(paths: list[Path]) -> None:
    """Make files written with ``durable=False`` durable: one ``sync`` where POSIX has it."""
    if hasattr(os, "sync"):
        os.sync()
        return
    for p in paths:  # Windows: no global sync; fsync each file (needs a writable handle there)
        with open(p, "r+b") as f:
            os.fsync(f.fileno())
