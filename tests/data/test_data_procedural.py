"""Tests for the procedural face generator, the built-in no-download training set."""

from __future__ import annotations

import numpy as np
import pytest

from facegan.data import procedural
from facegan.data.procedural import render_faces


@pytest.fixture(scope="module")
def faces64() -> np.ndarray:
    return render_faces(64, 64, seed=0)


@pytest.mark.parametrize("res", [16, 28, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype(res: int, channels: int) -> None:
    out = render_faces(3, res, seed=1, channels=channels)
    assert out.shape == (3, res, res, channels)
    assert out.dtype == np.uint8


def test_odd_resolution_and_empty_request() -> None:
    assert render_faces(2, 37).shape == (2, 37, 37, 3)
    assert render_faces(0, 64).shape == (0, 64, 64, 3)


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(res=4), dict(channels=2), dict(seed=-1),
                                    dict(start=-3)])
def test_rejects_bad_arguments(kwargs: dict) -> None:
    args = dict(n=1, res=32) | kwargs
    with pytest.raises(ValueError):
        render_faces(**args)


def test_deterministic_across_calls(faces64: np.ndarray) -> None:
    assert np.array_equal(render_faces(64, 64, seed=0), faces64)


def test_face_depends_only_on_seed_and_index() -> None:
    full = render_faces(20, 64, seed=3)
    assert np.array_equal(render_faces(10, 64, seed=3, start=5), full[5:15])
    assert np.array_equal(render_faces(1, 64, seed=3, start=19)[0], full[19])


def test_independent_of_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = render_faces(12, 32, seed=4)
    monkeypatch.setattr(procedural, "_CHUNK_PIXELS", 5 * 32 * 32)  # chunks of 5 faces
    assert np.array_equal(render_faces(12, 32, seed=4), reference)


def test_painting_windows_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each feature is painted only in a window around it. With the slack cut to the one pixel
    # the anti-aliasing ramp needs, the result must still equal painting the whole image,
    # or some window cuts a feature short.
    monkeypatch.setattr(procedural, "_MARGIN_PX", 1)
    windowed = render_faces(64, 128, seed=5)
    monkeypatch.setattr(procedural, "_MARGIN_PX", 10_000)
    assert np.array_equal(render_faces(64, 128, seed=5), windowed)


def test_seeds_give_different_faces() -> None:
    a, b = render_faces(8, 32, seed=0), render_faces(8, 32, seed=1)
    assert all(not np.array_equal(x, y) for x, y in zip(a, b))


def test_no_two_faces_identical(faces64: np.ndarray) -> None:
    flat = faces64.reshape(len(faces64), -1).astype(np.int16)
    diffs = np.abs(flat[:, None] - flat[None]).mean(-1)
    assert diffs[~np.eye(len(flat), dtype=bool)].min() > 3.0


def test_face_colours_vary(faces64: np.ndarray) -> None:
    centre = faces64[:, 24:40, 24:40].reshape(64, -1, 3).mean(1)  # cheeks, nose, eyes
    assert centre.std(0).min() > 15  # spread of the mean colour, per channel
    luminance = centre @ [0.299, 0.587, 0.114]
    assert luminance.max() - luminance.min() > 100  # light to dark skin


def test_faces_stand_out_from_background(faces64: np.ndarray) -> None:
    img = faces64.astype(np.float32)
    centre = img[:, 24:40, 24:40].mean((1, 2))
    corners = np.concatenate([img[:, :6, :6], img[:, :6, -6:]], 1).mean((1, 2))
    distinct = np.abs(centre - corners).max(-1) > 20
    assert distinct.mean() > 0.8


def test_images_use_a_wide_range(faces64: np.ndarray) -> None:
    lum = faces64.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    spread = np.percentile(lum, 99, axis=(1, 2)) - np.percentile(lum, 1, axis=(1, 2))
    assert spread.min() > 40 and np.median(spread) > 100


def test_features_are_symmetric_about_the_face(faces64: np.ndarray) -> None:
    # Faces are roughly centred and near-frontal, so mirroring barely changes the middle part;
    # a scrambled render would not pass this.
    mid = faces64[:, 16:48, 16:48].astype(np.float32)
    assert np.abs(mid - mid[:, :, ::-1]).mean() < 0.5 * np.abs(mid - mid[::-1]).mean()


def test_grey_is_luminance_of_colour() -> None:
    rgb = render_faces(6, 40, seed=2).astype(np.float64)
    grey = render_faces(6, 40, seed=2, channels=1)[..., 0].astype(np.float64)
    expected = rgb @ [0.299, 0.587, 0.114]
    assert np.abs(grey - expected).max() <= 1.0


def test_same_face_at_every_resolution() -> None:
    small = render_faces(4, 32, seed=6).astype(np.float32)
    big = render_faces(4, 128, seed=6).astype(np.float32)
    pooled = big.reshape(4, 32, 4, 32, 4, 3).mean((2, 4))
    assert np.abs(pooled - small).mean() < 6
