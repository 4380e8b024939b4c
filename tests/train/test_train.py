import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from facegan import checkpoint, load_generator
from facegan.errors import FaceganError
from facegan.train import loss
from facegan.train.toolbox import resume_config
from facegan.train.loop import train


def test_run_folder_contents(tiny_cfg):
    res = train(tiny_cfg, progress=False)
    run = res.run
    assert res.steps == 8 and res.images == 128 and res.stopped_by == "budget"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["res"] == 16 and cfg["batch"] == 16 and cfg["dataset_count"] == 128
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4, 6, 8]
    for r in recs:
        assert {"step", "images", "loss_D", "loss_G", "D_x", "D_G_z", "img_per_s"} <= r.keys()
        assert r["images"] == r["step"] * 16
        assert 0 < r["D_x"] < 1 and 0 < r["D_G_z"] < 1 and r["loss_D"] > 0 and r["img_per_s"] > 0
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["ckpt-00000004.safetensors", "ckpt-00000008.safetensors"]
    grid = Image.open(run / "samples" / "step-0000008.png")
    assert grid.size == (2 + 2 * 18, 2 + 2 * 18)  # 4 faces of 16² with 2-pixel padding
    assert Image.open(run / "loss_curve.png").size == (720, 360)


def _final_tensors(run):
    return checkpoint.load(run)[0]


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, tiny_cfg):
    # exercise every random stream: flips, label noise/flips, dropout
    cfg = replace(tiny_cfg, flip=True, label_noise=0.1, label_flip=0.1, model=replace(tiny_cfg.model, d_dropout=0.2))
    full = replace(cfg, out=str(tmp_path / "full"), max_images=16 * 12, ckpt_every=100)
    train(full, progress=False)

    half = replace(cfg, out=str(tmp_path / "half"), max_images=16 * 5, ckpt_every=100)  # stops mid-epoch
    assert train(half, progress=False).steps == 5
    resumed = resume_config(tmp_path / "half", max_images=16 * 12)
    assert resumed.label_flip == 0.1 and resumed.model.d_dropout == 0.2
    assert train(resumed, resume=True, progress=False).steps == 12

    a, b = _final_tensors(tmp_path / "full"), _final_tensors(tmp_path / "half")
    assert a.keys() == b.keys()
    assert any(k.startswith("optD.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the resumed log continues where the first part stopped
    steps = [json.loads(s)["step"] for s in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12


def test_resume_takes_the_run_folder_or_its_newest_checkpoint_file(tiny_cfg, tmp_path, monkeypatch):
    from test_cli import facegan_in_process

    run = train(tiny_cfg, progress=False).run
    newest = checkpoint.list_checkpoints(run)[-1]
    p = facegan_in_process("train", "--resume", newest, "--max-images", 16 * 10, "--no-progress", "--out", tmp_path / "elsewhere")
    assert p.returncode == 0 and "the run is at step 10" in p.stdout and f"run folder : {run}" in p.stdout, p.stderr
    assert checkpoint.read_meta(run)["step"] == 10 and not (tmp_path / "elsewhere").exists()
    assert "note: --out is ignored with --resume" in p.stderr
    older = checkpoint.list_checkpoints(run)[0]
    for bad, why in ((older, f"continues a run from its newest checkpoint (ckpt-00000010.safetensors), not from {older.name}; "
                              f"give the run folder: --resume {run}"),
                     (run / "config.json", "takes a run folder (the --out of a training run), not the file")):
        p = facegan_in_process("train", "--resume", bad, "--max-images", 16 * 12, "--no-progress")
        assert p.returncode == 2 and p.stderr.startswith("error: --resume ") and why in p.stderr, p.stderr
    monkeypatch.chdir(run / "checkpoints")  # a bare file name, given from inside the run's checkpoints folder
    p = facegan_in_process("train", "--resume", older.name, "--max-images", 16 * 12, "--no-progress")
    assert p.returncode == 2 and f"not from {older.name}" in p.stderr, p.stderr
    assert checkpoint.read_meta(run)["step"] == 10  # nothing trained by a refused resume


def test_existing_run_needs_resume(tiny_cfg):
    train(tiny_cfg, progress=False)
    with pytest.raises(FaceganError, match="--resume"):
        train(tiny_cfg, progress=False)


def test_nan_stops_run_and_keeps_last_good_checkpoint(tiny_cfg, monkeypatch):
    calls = {"n": 0}
    real_g_loss = loss.g_loss

    def poisoned(logits, kind="bce"):
        calls["n"] += 1
        out = real_g_loss(logits, kind)
        return out * float("nan") if calls["n"] > 5 else out

    monkeypatch.setattr(loss, "g_loss", poisoned)
    with pytest.raises(FaceganError, match="diverged at step 6") as e:
        train(tiny_cfg, progress=False)
    assert e.value.exit_code == 3
    ck = checkpoint.list_checkpoints(tiny_cfg.out)
    assert [p.name for p in ck] == ["ckpt-00000004.safetensors"]
    tensors, _ = checkpoint.load(ck[-1])
    assert all(torch.isfinite(v.float()).all() for k, v in tensors.items() if k[:2] in ("G.", "D."))


def test_signal_stops_gracefully_with_checkpoint(tiny_cfg, monkeypatch):
    calls = {"n": 0}
    real_g_loss = loss.g_loss

    def interrupt(logits, kind="bce"):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_g_loss(logits, kind)

    monkeypatch.setattr(loss, "g_loss", interrupt)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    res = train(replace(tiny_cfg, ckpt_every=100), progress=False)
    assert res.stopped_by == "signal" and res.steps == 3
    assert checkpoint.load(tiny_cfg.out)[1]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


@pytest.mark.slow
def test_max_time_budget(tiny_cfg):
    res = train(replace(tiny_cfg, max_images=None, max_time=1.0), progress=False)
    assert res.stopped_by == "time" and res.steps > 0
    assert checkpoint.load(tiny_cfg.out)[1]["step"] == res.steps


def test_epochs_budget_and_too_big_batch(tiny_cfg):
    assert train(replace(tiny_cfg, max_images=None, epochs=0.5), progress=False).steps == 4  # 128/16/2
    with pytest.raises(FaceganError, match="fewer than one batch"):
        train(replace(tiny_cfg, out=tiny_cfg.out + "2", batch=256), progress=False)


def test_generator_api_after_training(tiny_cfg):
    train(tiny_cfg, progress=False)
    G = load_generator(tiny_cfg.out)
    faces = G.sample(5, seed=0)
    assert faces.shape == (5, 16, 16, 3) and faces.dtype == np.uint8 and faces.std() > 0
    # the run's last grid shows faces 0..3 of seed 0
    grid = np.asarray(Image.open(os.path.join(tiny_cfg.out, "samples", "step-0000008.png")))
    assert np.abs(grid[2:18, 2:18].astype(int) - G.sample(1, seed=0)[0]).max() <= 1


def test_losses_are_finite_and_targets_follow_options():
    g = torch.Generator().manual_seed(0)
    r, f = loss.d_targets(1000, g, torch.device("cpu"))
    assert (r == 1).all() and (f == 0).all()
    r, f = loss.d_targets(1000, g, torch.device("cpu"), smoothing=0.1)
    assert torch.allclose(r, torch.full_like(r, 0.9))
    r, f = loss.d_targets(1000, g, torch.device("cpu"), noise=0.2)
    assert r.min() >= 0.8 and r.max() <= 1 and f.min() >= 0 and f.max() <= 0.2 and r.std() > 0
    r, f = loss.d_targets(10_000, g, torch.device("cpu"), flip=0.1)
    assert 0.08 < (r == 0).float().mean() < 0.12 and torch.equal(r + f, torch.ones_like(r))
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(loss.d_loss(big, big, torch.ones(2), torch.zeros(2))) and torch.isfinite(loss.g_loss(-big))


def test_device_and_precision_choice():
    from facegan.device import pick_device, pick_precision

    assert pick_device("cpu").type == "cpu"
    assert pick_precision("fp32", torch.device("cpu")) == "fp32"
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert pick_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    with pytest.raises(FaceganError, match="precision"):
        pick_precision("fp8", torch.device("cpu"))
    with pytest.raises(FaceganError, match="unknown device"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(FaceganError, match="CUDA is not available"):
            pick_device("cuda")


def test_grayscale_28_linear_entry_trains_and_samples(tiny_cfg):
    """The Fashion-MNIST path: 1 channel, 28², dense entry, D without BN, dropout."""
    from facegan.models.dcgan import ModelConfig

    m = ModelConfig(res=28, channels=1, z_dim=8, g_entry="linear", entry_res=7, g_pre=1, g_width=8, d_width=8,
                    width_cap=16, g_act="leaky", d_norm="none", d_dropout=0.3, d_head="linear")
    res = train(replace(tiny_cfg, model=m), progress=False)
    assert res.steps == 8
    faces = load_generator(res.run).sample(3)
    assert faces.shape == (3, 28, 28, 1)
    assert Image.open(res.run / "samples" / "step-0000008.png").mode == "L"


def test_tensorboard_logs_scalars_and_grids(tiny_cfg):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra (facegan[tensorboard])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = train(replace(tiny_cfg, tensorboard=True), progress=False)
    acc = EventAccumulator(str(res.run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    losses = acc.Scalars("train/loss_D")
    recs = [json.loads(line) for line in (res.run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in losses] == [r["images"] for r in recs]
    assert [e.value for e in losses] == pytest.approx([r["loss_D"] for r in recs])
    imgs = acc.Images("samples")
    assert [e.step for e in imgs] == [64, 128] and imgs[0].width == 2 + 2 * 18


def test_tensorboard_without_package_is_one_line_error(tiny_cfg, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with pytest.raises(FaceganError, match="facegan\\[tensorboard\\]"):
        train(replace(tiny_cfg, tensorboard=True), progress=False)
