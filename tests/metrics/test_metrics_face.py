"""Metrics outside ImageNet's feature space — faces (a detector), fd_face (a face-identity embedding),
swd (pixels) — on cases whose answer is known: identical sets, faces against noise, real faces."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan import metrics
from facegan.data.procedural import render_faces
from facegan.errors import FaceganError
from facegan.metrics import face_detect, fd_face, inception, swd
from facegan.metrics.evaluate import Evaluator

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces-aaf-128.zip"
dlib_needed = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="the anonymize extra (dlib) is not installed")


def noise(n: int, side: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return render_faces(96, 64, seed=1)


def real_faces(n: int) -> np.ndarray:
    """n evenly spaced faces of the shared benchmark set at 64² (the test skips without it)."""
    if not SHARED.is_file():
        pytest.skip("the shared face data is not here (../shared/data)")
    with zipfile.ZipFile(SHARED) as z:
        names = sorted(m for m in z.namelist() if m.lower().endswith((".jpg", ".png")))
        pick = names[:: max(1, len(names) // n)][:n]
        return np.stack([np.asarray(Image.open(BytesIO(z.read(m))).convert("RGB").resize((64, 64), Image.Resampling.BOX))
                         for m in pick])


@pytest.mark.slow
def test_swd_is_zero_for_identical_sets_and_orders_faces_before_noise(faces):
    same = swd.swd(faces, faces.copy(), seed=3)
    assert set(same) == {"swd_64", "swd_32", "swd_16", "swd"}
    assert all(v == 0.0 for v in same.values())
    other = render_faces(96, 64, seed=2)
    near, far = swd.swd(faces, other)["swd"], swd.swd(faces, noise(96))["swd"]
    assert 0 < near < far / 3, (near, far)
    assert swd.swd(faces, other, seed=0) == swd.swd(faces, other, seed=0)  # reproducible


def test_swd_of_a_larger_set_takes_evenly_spaced_images(faces):
    """Sets come sorted (here: faces, then noise); the larger set's first n images would be all faces."""
    mixed = np.concatenate([faces[:48], noise(48)])
    assert swd.swd(mixed, mixed[::2])["swd"] == 0.0


def test_swd_refuses_tiny_or_mismatched_images():
    with pytest.raises(FaceganError, match="at least 16"):
        swd.swd(noise(4, 8), noise(4, 8))
    with pytest.raises(FaceganError, match="one shape"):
        swd.swd(noise(4, 32), noise(4, 64))


@dlib_needed
@pytest.mark.slow
def test_fd_face_is_zero_for_identical_sets_and_large_for_noise(faces):
    emb = fd_face.embed(faces)
    assert emb.shape == (96, 128) and np.isfinite(emb).all()
    assert abs(fd_face.fd_face(emb, emb.copy())) < 1e-6
    other = fd_face.embed(render_faces(96, 64, seed=2))
    near, far = fd_face.fd_face(emb, other), fd_face.fd_face(emb, fd_face.embed(noise(96)))
    assert 0 < near < far / 3, (near, far)
    assert [c.shape for c in fd_face.chips(faces[:2])] == [(150, 150, 3)] * 2


@pytest.mark.slow
@dlib_needed
def test_face_detector_finds_faces_not_noise(faces):
    assert face_detect.one_face(noise(64)).mean() <= 0.02
    found = face_detect.one_face(faces)
    assert found.mean() >= 0.5, found.mean()  # drawn faces: most have the layout HOG looks for


@dlib_needed
@pytest.mark.slow
def test_real_faces_detect_at_a_high_rate_and_halves_are_close():
    real = real_faces(400)
    assert face_detect.one_face(real).mean() >= 0.9
    a, b = fd_face.embed(real[::2]), fd_face.embed(real[1::2])
    floor, to_noise = fd_face.fd_face(a, b), fd_face.fd_face(a, fd_face.embed(noise(200)))
    assert floor < to_noise / 10, (floor, to_noise)  # 200 vs 200 in 128-d: biased up (3.2 here; 0.46 at 2,000 vs 1,133)


@dlib_needed
@pytest.mark.slow
def test_registry_runs_face_metrics_without_inception(faces, monkeypatch, tmp_path):
    assert not metrics.need_inception(["faces", "fd_face", "swd"]) and metrics.need_pixels(["swd"])
    monkeypatch.setattr(inception, "extract", lambda *a, **k: pytest.fail("Inception ran for pixel-only metrics"))
    ev = Evaluator("procedural:96", 64, progress=False)
    res = ev.of_array(render_faces(48, 64, seed=5), ["faces", "fd_face", "swd"])
    assert {"faces", "faces_real", "fd_face", "swd", "swd_16"} <= res.keys()
    assert res["n_fake"] == 48 and res["n_real"] == 96
    assert "fd_face" in ev.memo and "faces" in ev.memo  # the real set's side is computed once
    again = ev.of_array(render_faces(48, 64, seed=5), ["fd_face"])
    assert again["fd_face"] == res["fd_face"]


def test_unknown_metric_and_missing_dlib_are_one_line(monkeypatch, faces):
    with pytest.raises(FaceganError, match="choose from .*fd_face"):
        metrics.check(["fid", "nope"])
    monkeypatch.setitem(sys.modules, "dlib", None)  # an import of dlib now fails
    with pytest.raises(FaceganError, match=r"faces metric needs dlib"):
        face_detect.one_face(faces[:2])
    assert fd_face.embed(faces[:2]).shape == (2, 128)  # fd_face runs dlib's network in torch: only its weights file
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else find_spec(name, *a))
    with pytest.raises(FaceganError, match=r"fd_face metric needs face-recognition-models.*facegan\[anonymize\]"):
        fd_face.embed(faces[:2])  # the network is cached by its file, but the file is looked up each time
