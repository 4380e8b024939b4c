"""Source detection and enumeration: folders, zips, known dataset layouts, IDX files."""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.data.sources import FolderSource, IdxSource, ZipSource, open_source
from facegan.errors import FaceganError


def png(color: int = 0, size: tuple[int, int] = (8, 8)) -> bytes:
    buf = BytesIO()
    Image.new("RGB", size, (color, color, color)).save(buf, "PNG")
    return buf.getvalue()


def make_tree(root: Path, files: list[str]) -> None:
    """Create ``files`` (relative paths) under ``root``, each a distinct small PNG."""
    for k, rel in enumerate(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(k))


def make_zip(path: Path, files: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for k, rel in enumerate(files):
            zf.writestr(rel, png(k))
    return path


def write_idx(path: Path, images: np.ndarray) -> Path:
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
    payload = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


MIXED = ["b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.webp", "e.BMP", "f.gif"]
IGNORED = [".hidden.jpg", ".cache/x.png", "__MACOSX/sub/._c.jpeg", "notes.txt", "sub/readme.md"]


def test_folder_is_recursive_sorted_and_ignores_hidden(tmp_path):
    make_tree(tmp_path, MIXED + IGNORED)
    src = open_source(tmp_path)
    assert isinstance(src, FolderSource) and src.kind == "folder"
    assert src.root == tmp_path.resolve()
    assert src.names == ["a.png", "b.JPG", "e.BMP", "f.gif", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert len(src) == 6
    assert src.read(4) == (tmp_path / "sub/c.jpeg").read_bytes()


def test_zip_lists_members_and_reads_without_extracting(tmp_path):
    archive = make_zip(tmp_path / "faces.zip", MIXED + IGNORED + ["dir/"])
    src = open_source(archive)
    assert isinstance(src, ZipSource) and src.kind == "zip"
    assert src.names == ["a.png", "b.JPG", "e.BMP", "f.gif", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert src.read(0) == png(1)  # a.png was written second
    assert set(os.listdir(tmp_path)) == {"faces.zip"}


def test_zip_source_pickles_without_its_handle(tmp_path):
    src = open_source(make_zip(tmp_path / "faces.zip", MIXED))
    src.read(0)
    clone = pickle.loads(pickle.dumps(src))
    assert clone._zip is None
    assert clone.read(1) == src.read(1)


CELEBA = ["img_align_celeba/000001.jpg", "img_align_celeba/000002.jpg"]


@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_celeba_folder(tmp_path, point_at):
    make_tree(tmp_path / "celeba", CELEBA + ["other/not_celeba.png"])
    (tmp_path / "celeba/list_attr_celeba.csv").write_text("id\n")
    root = tmp_path / "celeba" / ("" if point_at == "parent" else "img_align_celeba")
    src = open_source(root)
    assert src.kind == "celeba"
    assert [Path(n).name for n in src.names] == ["000001.jpg", "000002.jpg"]


def test_celeba_kaggle_zip_nested(tmp_path):
    files = [f"img_align_celeba/img_align_celeba/00000{k}.jpg" for k in (1, 2)]
    src = open_source(make_zip(tmp_path / "archive.zip", files + ["readme.png"]))
    assert src.kind == "celeba" and src.names == files


def test_ffhq_nested_numbered_folders(tmp_path):
    files = [f"images1024x1024/{name[:2]}000/{name}.png" for name in ("00000", "00001", "01000")]
    make_tree(tmp_path / "data", files)
    src = open_source(tmp_path / "data")
    assert src.kind == "ffhq" and src.names == files
    make_tree(tmp_path / "thumbnails128x128", ["00000/00000.png"])
    assert open_source(tmp_path / "thumbnails128x128").kind == "ffhq"


def faces_140k(split_root: str = "real_vs_fake/real-vs-fake") -> list[str]:
    splits = [f"{s}/{label}" for s in ("test", "train", "valid") for label in ("fake", "real")]
    return [f"{split_root}/{split}/{k}.jpg" for split in splits for k in (1, 2)]


def test_140k_takes_real_only_by_default(tmp_path):
    make_tree(tmp_path / "kaggle", faces_140k())
    real = open_source(tmp_path / "kaggle")
    assert real.kind == "140k" and len(real) == 6
    assert all("/real/" in n for n in real.names)
    both = open_source(tmp_path / "kaggle", include_fake=True)
    assert len(both) == 12 and sum("/fake/" in n for n in both.names) == 6
    assert real.fingerprint() != both.fingerprint()


def test_140k_zip(tmp_path):
    src = open_source(make_zip(tmp_path / "140k.zip", faces_140k()))
    assert src.kind == "140k" and len(src) == 6


def test_fashion_mnist_folder_raw_and_gz(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 28, 28), np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(8)))
    src = open_source(tmp_path)
    assert isinstance(src, IdxSource) and src.kind == "fashion-mnist" and len(src) == 8
    assert src.names[0] == "t10k-images-idx3-ubyte#0"
    assert src.names[3] == "train-images-idx3-ubyte.gz#0"
    np.testing.assert_array_equal(src.read(2), test[2])
    np.testing.assert_array_equal(src.read(7), train[4])
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(4), train[1])


def test_fashion_mnist_single_file_and_gunzipped_duplicate(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    gz = write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    assert len(open_source(gz)) == 2
    write_idx(tmp_path / "train-images-idx3-ubyte", images)  # as left by `gunzip -k`
    assert open_source(tmp_path).names == ["train-images-idx3-ubyte#0", "train-images-idx3-ubyte#1"]


def test_idx_with_bad_magic_is_a_user_error(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\0\0\x08\x01" + bytes(12))
    with pytest.raises(FaceganError, match="not an IDX image file"):
        open_source(bad)


def test_missing_path(tmp_path):
    with pytest.raises(FaceganError, match="not found: .*nope"):
        open_source(tmp_path / "nope")


def test_empty_folder_names_path_and_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FaceganError) as info:
        open_source(tmp_path)
    assert str(tmp_path) in str(info.value) and "jpg, jpeg, png, webp, bmp, gif" in str(info.value)
    assert info.value.exit_code == 2


def test_unreadable_or_unsupported_files(tmp_path):
    (tmp_path / "broken.zip").write_text("not a zip")
    with pytest.raises(FaceganError, match="cannot read archive .*broken.zip"):
        open_source(tmp_path / "broken.zip")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(FaceganError, match="unsupported dataset file"):
        open_source(tmp_path / "data.csv")
    with pytest.raises(FaceganError, match="no images found"):
        open_source(make_zip(tmp_path / "empty.zip", ["readme.txt"]))


def test_fingerprint_tracks_content(tmp_path):
    make_tree(tmp_path, MIXED)
    first = open_source(tmp_path).fingerprint()
    assert open_source(tmp_path).fingerprint() == first and len(first) == 16
    os.utime(tmp_path / "a.png", ns=(1, 1))
    touched = open_source(tmp_path).fingerprint()
    assert touched != first
    (tmp_path / "new.png").write_bytes(png())
    assert open_source(tmp_path).fingerprint() not in (first, touched)


def test_zip_fingerprint_changes_with_archive(tmp_path):
    archive = make_zip(tmp_path / "faces.zip", MIXED)
    first = open_source(archive).fingerprint()
    make_zip(archive, MIXED[:-1])
    assert open_source(archive).fingerprint() != first
