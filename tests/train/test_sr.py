"""Face upscaling: the nets, the degradations, training and resume, the metrics, and the CLIs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import _one_error_line, facegan, facegan_in_process

from facegan import checkpoint
from facegan.config import SRTrainConfig
from facegan.data.loader import split
from facegan.data.prepare import resolve_dataset
from facegan.errors import FaceganError
from facegan.metrics.pixel import psnr, ssim
from facegan.models.srresnet import SRConfig, SRDiscriminator, SRGenerator, bicubic, build_sr, downscale
from facegan.saved import load_upscaler
from facegan.train.toolbox import resume_config
from facegan.train.loop import train
from facegan.train.sr import Weights, degrade, sr_step, train_sr
from facegan.upscale import evaluate_heldout

SMALL = SRConfig(scale=4, width=8, blocks=2, d_width=8)


@pytest.fixture
def sr_cfg(tmp_path) -> SRTrainConfig:
    """32² truth, 8² inputs, 100 procedural faces (95 to train on), batch 4: a run takes seconds."""
    return SRTrainConfig(data="procedural:100", out=str(tmp_path / "sr"), hr_res=32, batch=4, max_images=4 * 8,
                         log_every=2, sample_every=4, ckpt_every=4, keep=2, model=SMALL)


@pytest.mark.parametrize("scale", [2, 4])
def test_shapes_and_start_equals_bicubic(scale):
    G = SRGenerator(SRConfig(scale=scale, width=8, blocks=2))
    x = torch.rand(3, 3, 16, 12) * 2 - 1
    y = G(x)
    assert y.shape == (3, 3, 16 * scale, 12 * scale)
    # the zero-initialised tail makes an untrained net exactly bicubic: the baseline from step 0
    assert torch.allclose(y, bicubic(x, scale), atol=1e-6)
    out = G.upscale(np.zeros((2, 10, 10, 3), np.uint8))
    assert out.shape == (2, 10 * scale, 10 * scale, 3) and out.dtype == np.uint8
    assert SRDiscriminator(3, 8)(y).shape == (3,)
    with pytest.raises(ValueError, match="scale"):
        SRConfig(scale=3)


def test_split_is_disjoint_and_every_kth():
    train_idx, held = split(100, 20)
    assert held.tolist() == [0, 20, 40, 60, 80]
    assert len(train_idx) == 95 and not set(train_idx) & set(held)


def test_degrade_quantises_and_each_option_changes_the_input():
    hr = torch.rand(4, 3, 32, 32) * 2 - 1
    base = SRTrainConfig(channels_last=False)
    clean = degrade(hr, 4, base, torch.Generator().manual_seed(0))
    assert clean.shape == (4, 3, 8, 8)
    levels = (clean + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # 8-bit, like every real input
    assert torch.allclose(clean, downscale(hr, 4), atol=1 / 127.5)
    for opt in (dict(blur=1.0), dict(noise=0.05), dict(jpeg=30)):
        a = degrade(hr, 4, replace(base, **opt), torch.Generator().manual_seed(0))
        b = degrade(hr, 4, replace(base, **opt), torch.Generator().manual_seed(0))
        assert torch.equal(a, b), opt  # seeded: resume replays the same degradations
        assert (a - clean).abs().mean() > 2 / 255, opt


def test_a_few_l1_steps_reduce_the_error():
    torch.manual_seed(0)
    G, _ = build_sr(SMALL)
    opt = torch.optim.Adam(G.parameters(), 3e-3)
    from facegan.data.procedural import render_faces

    hr = torch.from_numpy(render_faces(16, 32)).permute(0, 3, 1, 2).float() / 127.5 - 1
    lr = degrade(hr, 4, SRTrainConfig(channels_last=False), torch.Generator().manual_seed(0))
    first = sr_step(G, None, opt, None, lr, hr, Weights())
    for _ in range(60):
        last = sr_step(G, None, opt, None, lr, hr, Weights())
    assert last[1] < 0.8 * first[1]  # L1 (0.094 → 0.067 when written)
    assert last[4] > first[4] + 1.0  # PSNR of the batch, dB (+1.8)


def test_adversarial_step_trains_the_critic_and_changes_the_update():
    torch.manual_seed(0)
    hr = torch.rand(4, 3, 32, 32) * 2 - 1
    lr = downscale(hr, 4)
    results = {}
    for w in (Weights(), Weights(adv=0.1)):
        torch.manual_seed(1)
        G, D = build_sr(SMALL)
        G.tail.weight.data.normal_(0, 0.01)  # past the zero init, so every loss reaches the weights
        d0 = [p.detach().clone() for p in D.parameters()]
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
        stats = sr_step(G, D, opt_g, opt_d, lr, hr, w)
        assert torch.isfinite(stats).all()
        moved = any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
        assert moved == (w.adv > 0)
        results[w.adv] = torch.cat([p.detach().flatten() for p in G.parameters()])
    assert not torch.equal(results[0.0], results[0.1])


@pytest.mark.slow
def test_run_folder_checkpoints_and_exact_resume(sr_cfg, tmp_path):
    cfg = replace(sr_cfg, adv=0.01, blur=0.5, noise=0.02, jpeg=60)  # every random part of a step on
    full = train_sr(replace(cfg, out=str(tmp_path / "full")), progress=False)
    assert full.steps == 8 and full.images == 32
    run = Path(full.run)
    for name in ("config.json", "metrics.jsonl", "loss_curve.png", "progress.gif"):
        assert (run / name).is_file(), name
    panel = Image.open(run / "samples" / "step-0000008.png")
    assert panel.size == (5 * 32 + 6 * 2, 4 * 32 + 5 * 2)  # input / bicubic / ours / truth × the 5 held-out faces
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if "psnr_val" in r]
    assert val and val[-1]["val_n"] == 5 and np.isfinite(val[-1]["psnr_val"])
    assert any("loss_D" in r for r in recs)
    from facegan.report import render

    html = render(run)
    assert "held-out PSNR" in html and "×4: 8² → 32²" in html

    half = train_sr(replace(cfg, max_images=16), progress=False)
    assert half.steps == 4
    again = train_sr(resume_config(half.run, max_images=32), resume=True, progress=False)
    assert again.steps == 8
    a, _ = checkpoint.load(full.checkpoint)
    b, meta = checkpoint.load(again.checkpoint)
    assert meta["kind"] == "upscaler"
    for k in a:
        assert torch.equal(a[k], b[k]), k  # SR, critic, both optimisers, every RNG


def test_held_out_faces_are_never_trained_on(sr_cfg):
    from facegan.data.loader import BatchSampler

    train_idx, held = split(100, sr_cfg.holdout)
    s = BatchSampler(np.zeros((100, 1, 1, 1), np.uint8), 5, seed=0, subset=train_idx)
    seen = np.concatenate([s.indices(k) for k in range(s.steps_per_epoch * 2)])
    assert not set(seen.tolist()) & set(held.tolist())
    assert set(seen.tolist()) == set(train_idx.tolist())


@pytest.mark.slow
def test_training_beats_bicubic_on_held_out_faces(sr_cfg):
    """A short L1 run on procedural faces (flat colours, sharp edges) must beat its bicubic start."""
    result = train_sr(replace(sr_cfg, data="procedural:400", max_images=4 * 150, model=SRConfig(scale=4, width=16, blocks=2),
                              lr=1e-3, ckpt_every=150, sample_every=150), progress=False)
    from facegan.data.prepare import resolve_dataset

    scores = evaluate_heldout(load_upscaler(result.run), resolve_dataset("procedural:400", 32), sr_cfg.holdout)
    assert scores["n"] == 20
    assert scores["psnr"] > scores["psnr_bicubic"] + 0.3, scores
    assert scores["ssim"] > scores["ssim_bicubic"], scores
    assert 0 < scores["detail_bicubic"] < scores["detail"], scores  # sharper than bicubic


def test_psnr_and_ssim_match_reference_formulas():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    mse = ((a.astype(float) - b) ** 2).reshape(2, -1).mean(1)
    assert np.allclose(psnr(a, b), 10 * np.log10(255**2 / mse))
    assert np.isinf(psnr(a, a)).all() and np.allclose(ssim(a, a), 1.0)

    def ref_ssim(x, y):  # Wang et al. with scipy's Gaussian (σ 1.5, 11 taps), valid region, per channel
        vals = []
        for c in range(3):
            x1, y1 = x[..., c].astype(float), y[..., c].astype(float)
            f = lambda t: gaussian_filter(t, 1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
            mx, my = f(x1), f(y1)
            vx, vy, cxy = f(x1 * x1) - mx**2, f(y1 * y1) - my**2, f(x1 * y1) - mx * my
            c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
            vals.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
        return np.mean(vals)

    got = ssim(a, b)
    assert np.allclose(got, [ref_ssim(a[i], b[i]) for i in range(2)], atol=1e-5)
    assert 0 < got.min() < 0.99


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny upscaler run and one tiny GAN run (16² faces), shared by the CLI tests."""
    root = tmp_path_factory.mktemp("runs")
    sr = facegan("train-sr", "procedural:60", "--hr-res", "64", "--scale", "4", "--width", "8", "--blocks", "1",
                 "--batch", "4", "--max-images", "8", "--out", str(root / "sr"), "--no-progress")
    assert sr.returncode == 0, sr.stderr
    from conftest import TINY

    from facegan.config import TrainConfig

    gan = train(TrainConfig(data="procedural:64", out=str(root / "gan"), batch=16, max_images=32, log_every=1,
                            sample_every=2, ckpt_every=2, grid=4, model=TINY), progress=False)
    return root / "sr", Path(gan.run)


@pytest.mark.slow
def test_upscale_cli_file_folder_and_bad_files(trained, tmp_path):
    sr_run, _ = trained
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 12), (200, 40, 40)).save(src / "a.jpg")
    Image.new("RGBA", (16, 16)).save(src / "sub" / "b.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    p = facegan_in_process("upscale", str(src), "--model", str(sr_run), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    assert Image.open(tmp_path / "out" / "a.png").size == (80, 48)
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (64, 64)
    assert "broken.jpg" in p.stderr and "skipped 1" in p.stdout
    p = facegan_in_process("upscale", str(src / "a.jpg"), "--model", str(sr_run), "--out", str(tmp_path / "one"), "--scale", "4")
    assert p.returncode == 0 and Image.open(tmp_path / "one" / "a.png").size == (80, 48)


@pytest.mark.slow
def test_generate_upscale_pipeline(trained, tmp_path):
    sr_run, gan_run = trained
    p = facegan_in_process("generate", str(gan_run), "-n", "3", "--upscale", str(sr_run), "--out", str(tmp_path / "big"))
    assert p.returncode == 0, p.stderr
    manifest = json.loads((tmp_path / "big" / "manifest.json").read_text())
    assert manifest["res"] == 64 and manifest["generator_res"] == 16 and manifest["upscale"] == 4
    files = sorted((tmp_path / "big").glob("*.png"))
    assert len(files) == 3 and all(Image.open(f).size == (64, 64) for f in files)
    p = facegan_in_process("generate", str(gan_run), "--grid", str(tmp_path / "g.png"), "--rows", "2", "--upscale", str(sr_run))
    assert p.returncode == 0 and Image.open(tmp_path / "g.png").size == (2 * 64 + 3 * 2,) * 2


@pytest.mark.slow
def test_evaluate_measures_an_upscaler_run_on_its_held_out_split(trained, tmp_path):
    """`facegan evaluate SRRUN`: the registry's paired metrics (psnr, ssim) for ours and bicubic, what
    evaluate_heldout gives, in eval.json; set metrics are refused for an upscaler and paired ones for a GAN."""
    sr_run, gan_run = trained
    p = facegan_in_process("evaluate", str(sr_run), "-n", "3", "--out", str(tmp_path / "ev"))
    assert p.returncode == 0, p.stderr
    got = json.loads((tmp_path / "ev" / "eval.json").read_text())
    want = evaluate_heldout(load_upscaler(sr_run), resolve_dataset("procedural:60", 64), 20, n=3)
    assert set(got) == {"step", "n", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "detail", "detail_bicubic"}
    assert got["n"] == 3 and all(got[k] == pytest.approx(want[k], rel=1e-9) for k in want)
    assert 10 < got["psnr"] < 60 and 0 < got["ssim"] <= 1
    for args, needle in (((str(sr_run), "--metrics", "fid"), "measured with psnr, ssim"),
                         ((str(gan_run), "--metrics", "psnr"), "give an upscaler run")):
        bad = facegan_in_process("evaluate", *args, "--out", str(tmp_path / "bad"))
        assert bad.returncode == 2 and needle in _one_error_line(bad)
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["upscale", "{tmp}/in", "--model", "{gan}", "--out", "{tmp}/o"], "not an upscaler"),
        (["upscale", "{tmp}/in", "--model", "{sr}", "--out", "{tmp}/o", "--scale", "2"], "trained for ×4"),
        (["upscale", "{tmp}/nowhere", "--model", "{sr}", "--out", "{tmp}/o"], "input not found"),
        (["upscale", "{tmp}/empty", "--model", "{sr}", "--out", "{tmp}/o"], "no images"),
        (["generate", "{sr}"], "is an upscaler run"),
        (["generate", "{gan}", "--upscale", "{gan}"], "not an upscaler"),
        (["train-sr", "procedural:40", "--hr-res", "102", "--out", "{tmp}/r"], "multiple of --scale"),
        (["train-sr", "procedural:40", "--scale", "3", "--out", "{tmp}/r"], "scale must be one of"),
        (["train-sr", "--resume", "{gan}"], "GAN run"),
        (["train", "--resume", "{sr}"], "upscaler run"),
    ],
)
@pytest.mark.slow
def test_bad_sr_input_gives_one_line_and_exit_2(trained, tmp_path, args, needle):
    sr_run, gan_run = trained
    (tmp_path / "in").mkdir()
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "x.png")
    p = facegan_in_process(*[a.format(tmp=tmp_path, sr=sr_run, gan=gan_run) for a in args])
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in _one_error_line(p)
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_upscale_of_only_broken_files_fails(trained, tmp_path):
    sr_run, _ = trained
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    p = facegan_in_process("upscale", str(tmp_path / "in"), "--model", str(sr_run), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "x.jpg" in p.stderr and "nothing upscaled" in p.stderr


@pytest.mark.slow
def test_init_from_an_l1_run_and_refusals(sr_cfg, tmp_path):
    first = train_sr(replace(sr_cfg, max_images=8), progress=False)
    tuned = train_sr(replace(sr_cfg, out=str(tmp_path / "tuned"), init=str(first.run), max_images=4), progress=False)
    a = load_upscaler(first.run).state_dict()
    b = load_upscaler(tuned.run).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # it trained on from there
    with pytest.raises(FaceganError, match="architecture"):
        train_sr(replace(sr_cfg, out=str(tmp_path / "x"), init=str(first.run), model=SRConfig(width=12, blocks=2)), progress=False)
    with pytest.raises(FaceganError, match="already holds a run"):
        train_sr(replace(sr_cfg, out=str(first.run)), progress=False)
