"""Packing datasets into memory-mapped .npy files, the manifest, and the prepared-data cache."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.data import images, prepare as prep
from facegan.data.images import load_image
from facegan.data.prepare import (
    default_cache_dir,
    format_summary,
    manifest_path,
    open_prepared,
    prepare,
    resolve_dataset,
)
from facegan.data.procedural import render_faces
from facegan.errors import FaceganError

RES = 16


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def good_image(k: int) -> bytes:
    rng = np.random.default_rng(k)
    return encoded(Image.fromarray(rng.integers(0, 256, (24, 20, 3), np.uint8)))


BAD = {
    "b_empty.jpg": b"",
    "c_text.jpg": b"just some text\n",
    "d_truncated.jpg": encoded(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:300],
    "e_tiny.png": encoded(Image.new("RGB", (3, 3))),
    "f_bomb.png": encoded(Image.new("RGB", (40, 40))),  # made a bomb by the tests' MAX_PIXELS
}


@pytest.fixture
def messy(tmp_path, monkeypatch) -> Path:
    """Six good images interleaved (in sorted order) with one of each kind of bad file."""
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # 40x40 = 1600 pixels is a "bomb"
    root = tmp_path / "messy"
    root.mkdir()
    for k in range(6):
        (root / f"{'a' if k < 3 else 'g'}_good{k}.png").write_bytes(good_image(k))
    for name, data in BAD.items():
        (root / name).write_bytes(data)
    return root


def expected_pixels(root: Path, count: int = 6) -> np.ndarray:
    names = sorted(p.name for p in root.iterdir() if "good" in p.name)[:count]
    return np.stack([load_image((root / n).read_bytes(), RES) for n in names])


def test_prepare_packs_good_images_and_records_skips(messy, tmp_path):
    out = tmp_path / "out" / "faces16.npy"
    manifest = prepare(messy, out, RES, workers=1, progress=False)
    data = np.load(out, mmap_mode="r")
    assert isinstance(data, np.memmap) and data.dtype == np.uint8
    assert data.shape == (6, RES, RES, 3)
    np.testing.assert_array_equal(data, expected_pixels(messy))
    reasons = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert list(reasons) == sorted(BAD)
    assert reasons["b_empty.jpg"] == "empty file" and reasons["c_text.jpg"] == "not an image"
    assert reasons["d_truncated.jpg"] == "truncated" and reasons["e_tiny.png"] == "too small: 3x3"
    assert reasons["f_bomb.png"].startswith("decompression bomb")
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk == manifest and manifest_path(out).name == "faces16.npy.json"
    assert manifest["format"] == "facegan-prepared-1" and manifest["source"] == str(messy.resolve())
    shape = (manifest["count"], manifest["res"], manifest["channels"])
    assert manifest["source_kind"] == "folder" and shape == (6, RES, 3)
    assert manifest["crop"] == "center" and manifest["skipped_count"] == 5
    assert manifest["output"] == str(out) and len(manifest["fingerprint"]) == 16
    assert manifest["seconds"] >= 0 and manifest["created"].startswith("20")
    assert sorted(p.name for p in out.parent.iterdir()) == ["faces16.npy", "faces16.npy.json"]


def test_open_prepared_matches_file(messy, tmp_path):
    out = tmp_path / "p.npy"
    manifest = prepare(messy, out, RES, channels=1, workers=1, progress=False)
    data = open_prepared(out)
    assert data.manifest == manifest and data.path == out and len(data) == 6
    assert data.images.shape == (6, RES, RES, 1) and not data.images.flags.writeable


def test_format_summary_lists_skips(messy, tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "SUMMARY_SKIPPED_SHOWN", 2)
    text = format_summary(prepare(messy, tmp_path / "p.npy", RES, workers=1, progress=False))
    assert "b_empty.jpg: empty file" in text and "c_text.jpg: not an image" in text
    assert "d_truncated.jpg" not in text and "... and 3 more" in text
    assert "6 images" in text and "16x16x3" in text and str(tmp_path / "p.npy") in text


def test_two_workers_give_identical_output(messy, tmp_path, monkeypatch):
    # Spawned workers import images afresh, so give this process the same (default) limit.
    monkeypatch.setattr(images, "MAX_PIXELS", 64_000_000)
    monkeypatch.setattr(prep, "_CHUNK", 2)  # several chunks per worker, results must stay ordered
    one = prepare(messy, tmp_path / "one.npy", RES, workers=1, progress=False)
    two = prepare(messy, tmp_path / "two.npy", RES, workers=2, progress=False)
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "two.npy").read_bytes()
    assert one["skipped"] == two["skipped"] and one["count"] == 7


def test_limit_counts_packed_images(messy, tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "_CHUNK", 2)  # the limit is reached across chunk boundaries
    manifest = prepare(messy, tmp_path / "l.npy", RES, limit=4, workers=1, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), expected_pixels(messy, 4))
    # The 4th good image comes after every bad file in sorted order; the 4 must all be reported.
    assert manifest["count"] == 4 and manifest["skipped_count"] == 5
    first = prepare(messy, tmp_path / "l2.npy", RES, limit=2, workers=1, progress=False)
    assert first["count"] == 2 and first["skipped"] == []


def test_zip_source(tmp_path):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for k in range(3):
            zf.writestr(f"faces/{k}.png", good_image(k))
        zf.writestr("faces/bad.jpg", b"nope")
    manifest = prepare(archive, tmp_path / "z.npy", RES, workers=1, progress=False)
    expected = np.stack([load_image(good_image(k), RES) for k in range(3)])
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), expected)
    assert manifest["source_kind"] == "zip"
    assert manifest["skipped"] == [{"name": "faces/bad.jpg", "reason": "not an image"}]


def test_celeba_crop_choice(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[51:191, 19:159] = 255
    (folder / "000001.jpg").write_bytes(encoded(Image.fromarray(arr), "PNG"))
    auto = prepare(folder, tmp_path / "a.npy", RES, workers=1, progress=False)
    tight = prepare(folder, tmp_path / "c.npy", RES, crop="celeba", workers=1, progress=False)
    assert (auto["source_kind"], auto["crop"], tight["crop"]) == ("celeba", "center", "celeba")
    assert np.load(tmp_path / "c.npy")[0, 2:-2, 2:-2].min() >= 250
    assert np.load(tmp_path / "a.npy").mean() < 200  # the centre square shows the black border


def test_140k_real_only(tmp_path):
    for label in ("real", "fake"):
        (tmp_path / "rvf/train" / label).mkdir(parents=True)
        (tmp_path / "rvf/train" / label / "1.jpg").write_bytes(good_image(label == "fake"))
    real = prepare(tmp_path / "rvf", tmp_path / "r.npy", RES, workers=1, progress=False)
    assert real["count"] == 1
    both = prepare(
        tmp_path / "rvf", tmp_path / "b.npy", RES, include_fake=True, workers=1, progress=False
    )
    assert both["count"] == 2 and both["source_kind"] == "140k"


def write_idx(path: Path, pixels: np.ndarray) -> None:
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in pixels.shape)
    path.write_bytes(header + pixels.tobytes())


def test_fashion_mnist_is_not_filtered_as_too_small(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", pixels)
    native = prepare(tmp_path, tmp_path / "f28.npy", 28, channels=1, workers=1, progress=False)
    assert native["source_kind"] == "fashion-mnist" and native["min_size"] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "f28.npy")[..., 0], pixels)
    big = prepare(tmp_path, tmp_path / "f128.npy", 128, channels=3, workers=1, progress=False)
    rgb = np.load(tmp_path / "f128.npy")
    assert big["count"] == 5 and rgb.shape == (5, 128, 128, 3)
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_procedural(tmp_path):
    manifest = prepare("procedural:10", tmp_path / "p.npy", RES, channels=1, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), render_faces(10, RES, channels=1))
    assert manifest["source_kind"] == "procedural" and manifest["crop"] == "none"
    assert prep._open(None, False).count == 10_000
    with pytest.raises(FaceganError, match="procedural:N"):
        prepare("procedural:lots", tmp_path / "x.npy", RES)


def test_all_bad_is_a_user_error_and_writes_nothing(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.jpg").write_bytes(b"")
    (tmp_path / "src/b.jpg").write_text("text")
    message = r"no usable images in .*src \(2 skipped: a.jpg: empty file; b.jpg: not an image"
    with pytest.raises(FaceganError, match=message):
        prepare(tmp_path / "src", tmp_path / "out/x.npy", RES, workers=1, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_failure_midway_leaves_previous_result_untouched(messy, tmp_path, monkeypatch):
    out = tmp_path / "out" / "x.npy"
    prepare("procedural:3", out, RES, workers=1, progress=False)
    before = out.read_bytes(), manifest_path(out).read_bytes()
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        return load_image(*args, **kwargs)

    monkeypatch.setattr(prep, "load_image", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare(messy, out, RES, workers=1, progress=False)
    assert (out.read_bytes(), manifest_path(out).read_bytes()) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.npy", "x.npy.json"]
    open_prepared(out)


def test_new_npy_is_never_paired_with_an_old_manifest(messy, tmp_path, monkeypatch):
    out = tmp_path / "x.npy"
    prepare("procedural:6", out, RES, workers=1, progress=False)
    monkeypatch.setattr(prep.json, "dumps", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        prepare(messy, out, RES, workers=1, progress=False)  # also 6 images: shapes agree
    with pytest.raises(FaceganError, match="no manifest"):
        open_prepared(out)


def test_interrupted_first_prepare_leaves_no_file(messy, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "load_image", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(messy, tmp_path / "out/x.npy", RES, workers=1, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_open_prepared_errors(tmp_path):
    with pytest.raises(FaceganError, match="not found"):
        open_prepared(tmp_path / "missing.npy")
    np.save(tmp_path / "raw.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(FaceganError, match="no manifest"):
        open_prepared(tmp_path / "raw.npy")
    prepare("procedural:2", tmp_path / "p.npy", RES, workers=1, progress=False)
    (tmp_path / "p.npy").write_bytes(b"garbage")
    with pytest.raises(FaceganError, match="cannot read prepared dataset"):
        open_prepared(tmp_path / "p.npy")
    prepare("procedural:2", tmp_path / "q.npy", RES, workers=1, progress=False)
    manifest = json.loads(manifest_path(tmp_path / "q.npy").read_text())
    manifest_path(tmp_path / "q.npy").write_text(json.dumps({**manifest, "count": 3}))
    with pytest.raises(FaceganError, match="does not match its manifest"):
        open_prepared(tmp_path / "q.npy")


def test_resolve_caches_and_hits_without_decoding(messy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = resolve_dataset(messy, RES, cache_dir=cache, progress=False)
    assert first.parent == cache and first.name.startswith("folder-")
    assert first.name.endswith("-r16-c3-center.npy")
    assert open_prepared(first).manifest["count"] == 6

    def no_decoding(*args, **kwargs):
        raise AssertionError("cache hit must not decode")

    monkeypatch.setattr(prep, "load_image", no_decoding)
    assert resolve_dataset(messy, RES, crop="center", cache_dir=cache, progress=False) == first
    monkeypatch.undo()
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    (messy / "h_new.png").write_bytes(good_image(7))
    changed = resolve_dataset(messy, RES, cache_dir=cache, progress=False)
    assert changed != first and open_prepared(changed).manifest["count"] == 7


def test_resolve_prepared_file(tmp_path):
    out = tmp_path / "faces.npy"
    prepare("procedural:4", out, RES, workers=1, progress=False)
    assert resolve_dataset(out, RES) == out
    fix = r"holds 16x16x3 images .* run `facegan prepare procedural:4 --res 32`"
    with pytest.raises(FaceganError, match=fix):
        resolve_dataset(out, 32)
    with pytest.raises(FaceganError, match="--channels 1"):
        resolve_dataset(out, RES, channels=1)


def test_resolve_procedural_and_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    path = resolve_dataset("procedural:5", RES, progress=False)
    assert path.parent == tmp_path / "envcache" and path.name.startswith("procedural-")
    np.testing.assert_array_equal(np.load(path), render_faces(5, RES))
    monkeypatch.delenv("FACEGAN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "facegan"


def test_bad_arguments(messy, tmp_path):
    with pytest.raises(FaceganError, match="unknown crop"):
        prepare(messy, tmp_path / "x.npy", RES, crop="square")
    with pytest.raises(FaceganError, match="limit"):
        prepare(messy, tmp_path / "x.npy", RES, limit=0)
    with pytest.raises(FaceganError, match="not found"):
        prepare(tmp_path / "nope", tmp_path / "x.npy", RES)
