"""Crash-safe file writes, shared by everything that must never leave a half-written file.

Checkpoints, prepared datasets, their manifests, feature caches and generation manifests are all
written under a temporary name in the destination folder, fsynced and renamed: a rename within a
folder is atomic, so a process killed at any instant leaves either the old file or the new one.
Generated faces, thousands of small files, are renamed the same way but flushed to disk once
for the whole set (``durable=False``, then :func:`flush_to_disk`).

A process killed mid-write (SIGKILL, power loss) cannot remove its temporary file. Each temporary
name says which host and process wrote it, so :func:`sweep_stale` — run by every durable write
on its folder, and once by bulk writers — deletes those whose writer is dead, and never a file a
live writer (another run on the same folder) is still filling. Finished files get the ordinary
permissions of the user's umask (0644 for most), whatever the library that wrote them chose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_TMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<host>[A-Za-z0-9_-]+)-)?(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temp_name(final: Path) -> Path:
    """The temporary sibling of ``final``: hidden, and naming this host and process."""
    return final.with_name(f".{final.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a pid we cannot ask about: leave its file
    return True


def sweep_stale(folder: Path) -> list[Path]:
    """Delete the temporary files in ``folder`` whose writer (on this host) has died; return them.

    Temporaries written on other hosts (a shared file system) are left alone: their writer's
    liveness cannot be asked from here.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m and m["host"] in (None, _HOST) and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            try:
                if entry.is_dir(follow_symlinks=False):  # a folder built whole, then renamed (facegan.testpack)
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # swept by a concurrent run, or not ours to delete
    return removed


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
    if durable:
        sweep_stale(final.parent)
    tmp = temp_name(final)
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
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


MAX_JSON_BYTES = 64 << 20  # manifests, configs, results: a few MB at the very most


def parse_json(text: str | bytes) -> object:
    """JSON from a file's text; ValueError for anything that is not JSON, including nesting so deep
    that the parser would exhaust the stack (json raises RecursionError there)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file: ValueError naming what it is otherwise.

    The one way facegan opens a file it did not just write (images, IDX files, manifests,
    configs). Opened non-blocking, so a FIFO cannot hang the caller, then checked on the open
    descriptor (no race with a swap): pipes, devices (a link to /dev/zero) and folders are refused.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file"))
    return os.fdopen(fd, "rb")


def read_json(path: Path) -> object:
    """The JSON document in ``path``: a regular file (:func:`open_regular`) of at most MAX_JSON_BYTES,
    parsed by :func:`parse_json`. OSError or ValueError otherwise."""
    with open_regular(path) as f:
        if os.fstat(f.fileno()).st_size > MAX_JSON_BYTES:
            raise ValueError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MB")
        return parse_json(f.read())
