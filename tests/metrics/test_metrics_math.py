"""Metric math on synthetic features: known answers, invariants, and the failure modes each metric
exists to detect. Pure numpy; comparisons against scipy/prdc live in test_metrics_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegan import metrics
from facegan.errors import FaceganError
from facegan.metrics import fid, kid, memorization, prdc


def gaussian(n: int, d: int = 32, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


# --- FID ---------------------------------------------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    x, y = gaussian(600, 64, seed=0), gaussian(600, 64, seed=1, shift=0.2)
    sx, sy = fid.stats(x), fid.stats(y)
    scale = np.trace(sx[1])
    assert abs(fid.frechet_distance(*sx, *sx)) < 1e-9 * scale
    assert fid.frechet_distance(*sx, *sy) == pytest.approx(fid.frechet_distance(*sy, *sx), rel=1e-10)


def test_fid_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_trace_sqrt_of_low_rank_covariances_is_nuclear_norm_of_cross_product():
    """With Σ = AᵀA and Σ' = BᵀB, Tr sqrtm(ΣΣ') = ||ABᵀ||_* exactly: an independent route when N < D."""
    x, y = gaussian(40, 128, seed=0), gaussian(50, 128, seed=1) * 2
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    trace = fid.trace_sqrt_product(fid.stats(x)[1], fid.stats(y)[1])
    assert trace == pytest.approx(nuclear, rel=1e-10)  # unrounded noise eigenvalues: ~3e-8 off


@pytest.mark.parametrize("n_real, n_fake", [(40, 50), (128, 3), (300, 200)], ids=["N<D", "N=D", "N>D"])
def test_fid_from_features_equals_fid_from_statistics(n_real, n_fake):
    x, y = gaussian(n_real, 128, seed=0), gaussian(n_fake, 128, seed=1, shift=0.2) * 1.5
    expected = fid.frechet_distance(*fid.stats(x), *fid.stats(y))
    assert fid.fid_of_features(x, y) == pytest.approx(expected, rel=1e-9)
    assert metrics.compute(["fid"], metrics.MetricInput(real=x, fake=y))["fid"] == fid.fid_of_features(x, y)


def test_fid_grows_monotonically_with_corruption():
    x = gaussian(1000, 32, seed=0)
    noise = gaussian(1000, 32, seed=1)
    base = fid.stats(x)
    values = [fid.frechet_distance(*base, *fid.stats(x + s * noise)) for s in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert abs(values[0]) < 1e-9
    assert all(a < b for a, b in zip(values, values[1:])), values


# --- KID ---------------------------------------------------------------------------------------

def test_mmd2_unbiased_equals_its_definition_written_as_pair_sums():
    x, y = gaussian(7, 5, seed=0), gaussian(7, 5, seed=1, shift=0.5)
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    assert kid.mmd2_unbiased(x, y) == pytest.approx((xx + yy) / (m * (m - 1)) - 2 * xy / m**2, rel=1e-12)


def test_kid_matches_torch_fidelity_formula():
    """A literal port of torch-fidelity's polynomial_kernel + mmd2(unbiased), fed the same subsets."""
    real, fake = gaussian(300, 16, seed=0), gaussian(250, 16, seed=1, shift=0.1)
    subsets, size, seed = 10, 200, 3

    def polynomial_kernel(a, b, degree=3, coef0=1):
        return (a @ b.T * (1.0 / a.shape[1]) + coef0) ** degree

    def mmd2(k_xx, k_xy, k_yy):
        m = k_xx.shape[0]
        kt_xx_sum = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
        kt_yy_sum = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
        return (kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy.sum(axis=0).sum() / (m * m)

    rng = np.random.default_rng(seed)
    mmds = []
    for _ in range(subsets):
        f1 = real[rng.choice(len(real), size, replace=False)]
        f2 = fake[rng.choice(len(fake), size, replace=False)]
        mmds.append(mmd2(polynomial_kernel(f1, f1), polynomial_kernel(f1, f2), polynomial_kernel(f2, f2)))
    ours = kid.kid(real, fake, subsets=subsets, subset_size=size, seed=seed)
    assert ours["kid_mean"] == pytest.approx(np.mean(mmds), rel=1e-6)
    assert ours["kid_std"] == pytest.approx(np.std(mmds), rel=1e-6)


def test_kid_is_zero_within_noise_for_one_distribution_and_positive_for_two():
    x = gaussian(400, 16, seed=0)
    same = kid.kid(x, gaussian(400, 16, seed=1), subsets=20, subset_size=200)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"]
    apart = kid.kid(x, gaussian(400, 16, seed=1, shift=0.5), subsets=20, subset_size=200)
    assert apart["kid_mean"] > 10 * apart["kid_std"] > 0


def test_kid_is_deterministic_per_seed_and_clips_subset_size():
    x, y = gaussian(30, 8, seed=0), gaussian(20, 8, seed=1)  # smaller than the default subset size
    assert kid.kid(x, y, subsets=5, seed=1) == kid.kid(x, y, subsets=5, seed=1)
    assert kid.kid(x, y, subsets=5, seed=1) != kid.kid(x, y, subsets=5, seed=2)
    with pytest.raises(FaceganError):
        kid.kid(x, y[:1])


# --- precision / recall / density / coverage ---------------------------------------------------

def test_chunked_distances_match_direct_distances_for_any_chunk_size():
    a, b = gaussian(37, 6, seed=0), gaussian(23, 6, seed=1)
    direct = np.linalg.norm(a[:, None] - b[None], axis=-1)
    for max_bytes in (1, 8 * 23 * 5, 10**9):
        got = np.concatenate([d for _, d in prdc.distance_chunks(a, b, max_bytes)])
        np.testing.assert_allclose(got, direct, rtol=1e-10)


def test_kth_neighbour_excludes_self_but_counts_duplicates():
    x = gaussian(30, 4, seed=0)
    direct = np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)  # column 0 is self
    np.testing.assert_allclose(prdc.kth_neighbour_distances(x, 3), direct[:, 3], rtol=1e-10)
    assert prdc.kth_neighbour_distances(np.concatenate([x, x[:1]]), 1)[0] < 1e-6  # 0 up to cancellation
    with pytest.raises(FaceganError):
        prdc.kth_neighbour_distances(x[:3], 3)


def test_identical_sets_have_full_precision_recall_and_coverage():
    x = gaussian(300, 16)
    assert prdc.precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}
    assert prdc.density_coverage(x, x)["coverage"] == 1.0


def test_same_distribution_scores_high_on_all_four():
    real, fake = gaussian(500, 16, seed=0), gaussian(500, 16, seed=1)
    pr, dc = prdc.precision_recall(real, fake), prdc.density_coverage(real, fake)
    assert pr["precision"] > 0.7 and pr["recall"] > 0.7
    assert 0.7 < dc["density"] < 1.3 and dc["coverage"] > 0.9


def test_precision_drops_for_fakes_far_from_reals():
    real = gaussian(300, 16, seed=0)
    far = gaussian(300, 16, seed=1, shift=5.0)
    assert prdc.precision_recall(real, far)["precision"] == 0.0
    assert prdc.density_coverage(real, far) == {"density": 0.0, "coverage": 0.0}


def test_recall_drops_when_every_fake_is_the_same_face():
    real = gaussian(300, 16, seed=0)
    collapsed = np.repeat(gaussian(1, 16, seed=1), 300, axis=0)
    collapsed += gaussian(300, 16, seed=2) * 1e-3  # a tight cluster, not exact duplicates
    assert prdc.precision_recall(real, collapsed)["recall"] < 0.05


# --- memorization ------------------------------------------------------------------------------

def test_memorization_flags_copies_and_near_copies_but_not_new_samples():
    real = gaussian(400, 64, seed=0)
    copies = real[:25]
    near_copies = real[25:50] + 0.01 * gaussian(25, 64, seed=1)
    new = gaussian(50, 64, seed=2)
    stats, dist, idx = memorization.memorization(real, np.concatenate([copies, near_copies, new]))
    assert stats["fraction"] == 0.5
    np.testing.assert_array_equal(idx[:50], np.arange(50))
    assert np.all(dist[:25] < 1e-6)
    assert memorization.memorization(real, new)[0]["fraction"] < 0.05
    assert stats["threshold"] > 0 and stats["nn_median"] > stats["threshold"]


def test_memorization_pixels_and_closest_pairs_png(tmp_path):
    rng = np.random.default_rng(0)
    real_imgs = rng.integers(0, 256, (60, 40, 40, 3), dtype=np.uint8)  # > 32²: exercises downscaling
    fake_imgs = np.concatenate([real_imgs[:10], rng.integers(0, 256, (30, 40, 40, 3), dtype=np.uint8)])
    real_feats = gaussian(60, 32, seed=1)
    fake_feats = np.concatenate([real_feats[:10], gaussian(30, 32, seed=2)])
    inp = metrics.MetricInput(real=real_feats, fake=fake_feats, real_images=real_imgs, fake_images=fake_imgs,
                              out_dir=tmp_path)
    result = memorization.compute(inp)
    assert result["mem_fraction"] == pytest.approx(0.25)
    assert result["mem_pixel_fraction"] == pytest.approx(0.25)
    png = np.asarray(Image.open(tmp_path / "closest_pairs.png"))
    k, pad = memorization.TOP_PAIRS, 2
    assert png.shape == (2 * (40 + pad) + pad, k * (40 + pad) + pad, 3)
    top, bottom = png[pad : pad + 40, pad : pad + 40], png[2 * pad + 40 : 2 * pad + 80, pad : pad + 40]
    np.testing.assert_array_equal(top, bottom)  # the closest pair is an exact copy
    assert any(np.array_equal(top, img) for img in real_imgs[:10])


def test_pixels_downscale_large_images_and_keep_small_ones():
    gray = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 1), dtype=np.uint8)
    assert memorization.pixels(gray).shape == (3, 32 * 32)
    small = gray[:, :16, :16]
    np.testing.assert_array_equal(memorization.pixels(small), small.reshape(3, -1).astype(np.float32))


# --- registry ----------------------------------------------------------------------------------

def test_compute_runs_every_registered_feature_metric():
    """Every metric that reads Inception features, from features alone (the pixel-only ones —
    faces, fd_face, swd — are tests/test_metrics_face.py's)."""
    real, fake = gaussian(60, 8, seed=0), gaussian(50, 8, seed=1)
    names = [n for n, m in metrics.METRICS.items() if m.inception]
    assert [n for n, m in metrics.METRICS.items() if n not in names and not m.pairs] == ["faces", "fd_face", "swd"]
    assert list(metrics.PAIRED) == ["psnr", "ssim"]  # the paired ones are tests/test_sr.py's
    result = metrics.compute(names, metrics.MetricInput(real=real, fake=fake))
    assert set(result) == {"fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
                           "mem_fraction", "mem_nn_median", "mem_threshold"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in result.values())


def test_unknown_metric_or_mismatched_features_is_a_user_error():
    inp = metrics.MetricInput(real=gaussian(10, 4), fake=gaussian(10, 4))
    with pytest.raises(FaceganError, match="fid, kid, pr, dc, mem"):
        metrics.compute(["fid", "lpips"], inp)
    with pytest.raises(FaceganError):
        metrics.compute(["fid"], metrics.MetricInput(real=gaussian(10, 4), fake=gaussian(10, 5)))


def test_paired_metrics_compare_outputs_with_their_truths():
    """psnr and ssim from the registry: exact on identical pairs, the reference formula on noisy ones,
    and a user error without pairs (or with pairs of different shapes)."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(truth.astype(int) + rng.integers(-8, 9, truth.shape), 0, 255).astype(np.uint8)
    same = metrics.compute(["psnr", "ssim"], metrics.MetricInput(pairs=(truth, truth)))
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    mse = ((noisy.astype(np.float64) - truth) ** 2).reshape(4, -1).mean(1)
    got = metrics.compute(["psnr", "ssim"], metrics.MetricInput(pairs=(noisy, truth)))
    assert got["psnr"] == pytest.approx(float(np.mean(10 * np.log10(255.0**2 / mse))), rel=1e-12)
    assert 0 < got["ssim"] < 1
    with pytest.raises(FaceganError, match="image for image"):
        metrics.compute(["psnr"], metrics.MetricInput())
    with pytest.raises(FaceganError, match="image for image"):
        metrics.compute(["ssim"], metrics.MetricInput(pairs=(noisy, truth[:2])))


def test_every_registered_metric_is_in_the_evaluate_help_with_its_keys():
    text = metrics.help_text()
    for name, m in metrics.METRICS.items():
        assert f"  {name} " in text, name
        assert m.keys and m.about
    assert metrics.keys(["kid", "fid"]) == ["fid", "kid_mean", "kid_std"]  # registry order
    assert metrics.DEFAULTS == ("fid", "kid", "pr", "dc", "mem")

