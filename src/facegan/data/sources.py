"""Find the images in whatever the user points at: a folder, a zip, a known dataset layout.

:func:`open_source` recognises the layouts people actually download (CelebA
``img_align_celeba``, FFHQ, the Kaggle "140k real and fake faces" tree, Fashion-MNIST IDX
files) so that the right subset is taken and the manifest can say what was packed. Every source
lists its items in sorted order, so the same data always packs to the same file, and exposes a
:meth:`Source.fingerprint` that changes whenever a file is added, removed or modified, which is
what keys the prepared-dataset cache.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import re
import zipfile
import zlib
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np

from facegan.data.images import MAX_FILE_BYTES, BadImage
from facegan.errors import FaceganError
from facegan.fileio import open_regular

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_IDX_NAME = re.compile(r"images[.-]idx3-ubyte(\.gz)?$", re.IGNORECASE)
_IDX_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_MAX_BYTES = 512 << 20  # 10× Fashion-MNIST; each decode worker holds its own copy
_FFHQ_DIR = re.compile(r"ffhq|flickr.?faces|images\d+x\d+|thumbnails\d+x\d+", re.IGNORECASE)


class Source(ABC):
    """An ordered, indexable collection of images; safe to pickle into worker processes."""

    kind: str
    root: Path
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def read(self, i: int) -> bytes | np.ndarray:
        """Encoded bytes of item ``i`` (or a decoded uint8 array for raw-pixel formats)."""

    @abstractmethod
    def _identity(self) -> list[str]:
        """Lines that change whenever the data changes (names, sizes, mtimes)."""

    def fingerprint(self) -> str:
        """Short hash of where the data is and what it contains, for cache invalidation."""
        return hash_lines([self.kind, str(self.root), *self._identity()])


def hash_lines(lines: Iterable[str]) -> str:
    """16 hex digits of SHA-256 over ``lines``: short enough for file names, ample for a cache."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


class FolderSource(Source):
    """Image files under a directory, read one by one from disk."""

    def __init__(self, root: Path, kind: str, names: list[str]) -> None:
        self.root, self.kind, self.names = root, kind, names

    def read(self, i: int) -> bytes:
        return read_file(self.root / self.names[i])

    def _identity(self) -> list[str]:
        lines = []
        for name in self.names:
            try:
                st = (self.root / name).stat()
                lines.append(f"{name}\t{st.st_mode:o}\t{st.st_size}\t{st.st_mtime_ns}")
            except OSError as e:  # a dangling link or a loop: skipped when read, named here
                lines.append(f"{name}\t{e.errno}")
        return lines


class ZipSource(Source):
    """Image members of a zip archive, read without extracting.

    Each process opens its own ``ZipFile``: a handle shared across ``fork`` shares one file
    offset, and workers seeking it concurrently would read each other's bytes.
    """

    def __init__(self, root: Path, kind: str, names: list[str]) -> None:
        self.root, self.kind, self.names = root, kind, names
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": -1}

    def read(self, i: int) -> bytes:
        """One member's bytes; anything that makes it unusable is a :class:`BadImage` naming why.

        Checked before inflating: encryption and compression methods zipfile cannot decode
        (deflate64, …), and the declared size against MAX_FILE_BYTES; the read itself is capped
        too, so a member that lies about its size still cannot inflate into gigabytes.
        """
        if self._zip is None or self._pid != os.getpid():
            try:
                self._zip, self._pid = zipfile.ZipFile(self.root), os.getpid()
            except (OSError, zipfile.BadZipFile) as e:  # the archive itself changed or vanished: stop, once
                raise FaceganError(f"cannot read archive {self.root} any more: {e}") from None
        if _unsafe_member(self.names[i]):
            raise BadImage("unsafe path in the archive ('..', absolute or a drive): not read")
        info = self._zip.getinfo(self.names[i])
        if info.flag_bits & 0x1:
            raise BadImage("encrypted zip member")
        if info.compress_type not in _ZIP_METHODS:
            raise BadImage(f"unsupported zip compression method {info.compress_type}")
        if info.file_size > MAX_FILE_BYTES:
            raise BadImage(f"too large: {info.file_size / 2**20:.0f} MB inflated, over {MAX_FILE_BYTES >> 20} MB")
        try:
            with self._zip.open(info) as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except Exception as e:  # noqa: BLE001 - each decompressor (zlib, bz2, lzma) fails its own way on bad bytes
            raise BadImage(f"unreadable zip member: {e or type(e).__name__}") from None
        if len(data) > MAX_FILE_BYTES:
            raise BadImage(f"too large: over {MAX_FILE_BYTES >> 20} MB inflated")
        return data

    def _identity(self) -> list[str]:
        st = self.root.stat()
        with zipfile.ZipFile(self.root) as zf:
            infos = {info.filename: info for info in zf.infolist()}
        lines = [f"archive\t{st.st_size}\t{st.st_mtime_ns}"]
        lines += [f"{n}\t{infos[n].file_size}\t{infos[n].CRC}" for n in self.names]
        return lines


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
def read_file(path: Path, cap: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``cap`` bytes; :class:`BadImage` otherwise.

    The one way facegan reads a user's image file (through :func:`open_regular`, so a FIFO named
    ``pipe.jpg`` cannot hang the run): pipes, devices (a link to /dev/zero), folders, dangling
    links and link loops are named skips, and the size is checked before a byte is read.
    """
    try:
        f = open_regular(path)
    except OSError as e:
        what = "a dangling link" if e.errno == errno.ENOENT and os.path.islink(path) else e.strerror
        raise BadImage(f"unreadable: {what}") from None
    except ValueError as e:  # what it is instead: a named pipe, a device, a folder
        raise BadImage(f"not an image file: {e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            raise BadImage(f"too large: {size / 2**20:.0f} MB, over {cap >> 20} MB")
        try:
            data = f.read(cap + 1)
        except OSError as e:
            raise BadImage(f"unreadable: {e.strerror}") from None
    if len(data) > cap:
        raise BadImage(f"too large: grew past {cap >> 20} MB while being read")
    return data


class IdxSource(Source):
    """Images stored in IDX files (Fashion-MNIST / MNIST), yielded as 2-D uint8 arrays.

    Pixel arrays are loaded lazily per process so that pickling the source into workers sends
    only file names, not 50 MB of pixels.
    """

    kind = "fashion-mnist"

    def __init__(self, root: Path, files: list[Path]) -> None:
        self.root, self.files = root, files
        counts = [_read_idx_header(f)[0] for f in files]
        self._starts = np.cumsum([0] + counts).tolist()
        self.names = [f"{f.name}#{k}" for f, n in zip(files, counts) for k in range(n)]
        self._arrays: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}

    def read(self, i: int) -> np.ndarray:
        f = bisect_right(self._starts, i) - 1
        if f not in self._arrays:
            self._arrays[f] = _load_idx(self.files[f])
        return self._arrays[f][i - self._starts[f]]

    def _identity(self) -> list[str]:
        return [f"{f}\t{f.stat().st_size}\t{f.stat().st_mtime_ns}" for f in self.files]


def read_photo(path: str | Path, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    """``decode`` of the user's file at ``path`` (read by :func:`read_file`); a bad or unreadable file
    is one :class:`FaceganError` line naming it — for commands that take one photo."""
    try:
        return decode(read_file(Path(path)))
    except BadImage as e:
        raise FaceganError(f"{path}: {e}") from None
    except OSError as e:
        raise FaceganError(f"cannot read {path}: {e.strerror or e}") from None


def open_source(src: str | Path, include_fake: bool = False) -> Source:
    """Detect what ``src`` is and list its images.

    ``include_fake`` only matters for the 140k real-and-fake layout, where by default only the
    real photographs are taken (training a face GAN on another GAN's output copies its flaws).
    """
    path = Path(src).expanduser()
    if not path.exists():
        raise FaceganError(f"dataset not found: {path}")
    path = path.resolve()
    if path.is_dir():
        return _open_folder(path, include_fake)
    if not path.is_file():  # a pipe or a device would block or never end
        raise FaceganError(f"dataset {path} is neither a folder nor a regular file")
    if _IDX_NAME.search(path.name):
        return IdxSource(path, [path])
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return _open_zip(path, include_fake)
    raise FaceganError(
        f"unsupported dataset file: {path} (expected a folder of images, a .zip, "
        "a Fashion-MNIST *-images-idx3-ubyte[.gz] file, or a .npy made by `facegan prepare`)"
    )


def _open_folder(root: Path, include_fake: bool) -> Source:
    images, idx_files = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not _visible(name):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append((rel_dir / name).as_posix())
            elif _IDX_NAME.search(name):
                idx_files.append(Path(dirpath) / name)
    if idx_files and not images:
        return IdxSource(root, _dedupe_idx(idx_files))
    kind, names = _classify(sorted(images), root.name, "folder", include_fake)
    if not names:
        raise FaceganError(_no_images_message(root))
    return FolderSource(root, kind, names)


def _open_zip(path: Path, include_fake: bool) -> Source:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise FaceganError(f"cannot read archive {path}: {e}; is the download complete?") from None
    images = sorted(
        m
        for m in members
        if not m.endswith("/")
        and m.lower().endswith(IMAGE_EXTENSIONS)
        and all(_visible(part) or part == ".." for part in _member_parts(m))  # hidden files are not data; ".." is refused by name
    )
    kind, names = _classify(images, path.stem, "zip", include_fake)
    if not names:
        raise FaceganError(_no_images_message(path))
    return ZipSource(path, kind, names)


def _classify(
    paths: list[str], root_name: str, plain_kind: str, include_fake: bool
) -> tuple[str, list[str]]:
    """Recognise a known dataset layout from relative image paths and select its images.

    ``root_name`` (the folder or zip name) takes part in detection, so pointing straight at
    ``img_align_celeba/`` or ``ffhq.zip`` works as well as pointing at their parent.
    """
    dirs = [[root_name.lower(), *p.lower().split("/")[:-1]] for p in paths]
    celeba = [p for p, d in zip(paths, dirs) if "img_align_celeba" in d]
    if celeba:
        return "celeba", celeba
    all_dirs = {part for d in dirs for part in d}
    if {"real", "fake"} <= all_dirs:
        return "140k", [p for p, d in zip(paths, dirs) if include_fake or "fake" not in d]
    if any(_FFHQ_DIR.search(part) for part in all_dirs):
        return "ffhq", paths
    return plain_kind, paths


def _unsafe_member(name: str) -> bool:
    """A member path that would climb out of, or start outside, the folder it were extracted to.

    Reading it in place would be harmless, but such a path is a sign of a crafted archive, so it is
    skipped and named like every other refused file rather than trained on or dropped unseen.
    """
    parts = _member_parts(name)
    return parts[0] == "" or ".." in parts or bool(re.fullmatch(r"[A-Za-z]:", parts[0]))  # absolute, climbing, a drive


def _member_parts(name: str) -> list[str]:
    """A zip member's path components; a zip made on Windows may separate them with backslashes."""
    return re.split(r"[\\/]", name)


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _dedupe_idx(files: list[Path]) -> list[Path]:
    """Sorted IDX files, dropping ``x.gz`` when ``x`` sits next to it (after ``gunzip -k``)."""
    names = {f.name for f in files}
    return sorted(f for f in files if not (f.suffix == ".gz" and f.stem in names))


def _no_images_message(path: Path) -> str:
    exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    return f"no images found in {path} (looked for {exts}); point at a folder or zip of face images"


def _open_idx(path: Path) -> IO[bytes]:
    try:
        f = open_regular(path)
    except (OSError, ValueError) as e:
        raise FaceganError(f"cannot read IDX file {path}: {e}") from None
    return gzip.GzipFile(fileobj=f, mode="rb") if path.suffix == ".gz" else f


def _read_idx(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of an IDX file (inflated for .gz); a FaceganError naming the file for a bad one."""
    try:
        with _open_idx(path) as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise FaceganError(f"cannot read IDX file {path}: {e or type(e).__name__}; re-download it") from None


def _read_idx_header(path: Path) -> tuple[int, int, int]:
    """Return (count, rows, cols) from an IDX3 header: magic then three big-endian uint32."""
    header = _read_idx(path, 16)
    if len(header) < 16 or int.from_bytes(header[:4], "big") != _IDX_MAGIC:
        raise FaceganError(f"{path} is not an IDX image file (bad header); re-download it")
    count, rows, cols = (int.from_bytes(header[i : i + 4], "big") for i in (4, 8, 12))
    if not (0 < rows <= 1024 and 0 < cols <= 1024 and count * rows * cols <= _IDX_MAX_BYTES):
        raise FaceganError(f"{path} declares {count} images of {rows}x{cols}, beyond what an IDX image file holds")
    if path.suffix == ".gz" and _gzip_size(path) != (16 + count * rows * cols) % 2**32:
        raise FaceganError(f"{path} does not inflate to the {count} images its header declares (truncated?); re-download it")
    return count, rows, cols


def _gzip_size(path: Path) -> int:
    """The inflated size a gzip file's trailer records (mod 2³²): known before inflating anything."""
    with open_regular(path) as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _load_idx(path: Path) -> np.ndarray:
    count, rows, cols = _read_idx_header(path)
    raw = _read_idx(path, 16 + count * rows * cols)  # bounded: a .gz cannot inflate past what the header declared
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if pixels.size != count * rows * cols:
        raise FaceganError(f"{path} is truncated ({pixels.size} of {count * rows * cols} pixels)")
    return pixels.reshape(count, rows, cols)
