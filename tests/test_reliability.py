"""Hostile files, bad values and failing disks, one class of defect at a time (issue #14).

Every entry point is driven in-process through the real CLI boundary (:func:`facegan.cli.main`),
so these tests see exactly what a user sees — the exit code and stderr — without paying for a
Python start per case. Each case asserts one ``error:`` line (or a named skip), no traceback,
no temporary file left behind and nothing written where it should not be.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import TINY, real_state
from hostile import BAD_VALUES, TRAINING_RULE_CASES, checkpoint_variants, good_image, hostile_zip, special_files
from PIL import Image

from facegan import checkpoint, fileio
from facegan.cli import main
from facegan.config import TrainConfig
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.train import loop, toolbox
from facegan.viz import read_metrics

CFG = TrainConfig(preset="tiny", batch=4, max_images=64, model=TINY)


def cli(*args: object, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``facegan ARGS`` in this process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with mock.patch.object(sys, "argv", ["facegan", *map(str, args)]), redirect_stdout(out), redirect_stderr(err), \
                mock.patch.dict(os.environ, {"FACEGAN_DEBUG": ""}):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


PROGRESS = re.compile(r"\[\d\d:\d\d|\d%\|")  # a tqdm progress-bar line (elapsed time, percentage)


def one_error(code: int, err: str, expect_code: int = 2) -> str:
    """The single ``error:`` line of a failed command (asserting there is exactly one, and no traceback)."""
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS.search(line)]
    assert code == expect_code, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


def _faces(folder: Path, n: int, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"face{i:03d}.png").write_bytes(good_image(rng, "PNG", (48, 48)))


def _checkpoint_file(tmp_path: Path, cfg: TrainConfig = CFG) -> Path:
    return checkpoint.save(tmp_path / "run", 1, *real_state(cfg))


# ---- 1. leaks after a kill ---------------------------------------------------------------------

def test_stale_temporaries_of_dead_writers_are_swept_live_ones_kept(tmp_path):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    host = fileio._HOST
    stale = [ck / f".ckpt-00000004.safetensors.{host}-{dead.pid}-0123abcd.tmp",
             ck / f".ckpt-00000002.safetensors.{dead.pid}-89abcdef.tmp"]  # the name before hosts were recorded
    alive = ck / f".ckpt-00000008.safetensors.{host}-{os.getppid()}-00000000.tmp"
    elsewhere = ck / f".ckpt-00000006.safetensors.otherhost-{dead.pid}-11111111.tmp"
    for p in (*stale, alive, elsewhere):
        p.write_bytes(b"half a checkpoint")
    checkpoint.save(tmp_path / "run", 1, *real_state(CFG))
    left = {p.name for p in ck.iterdir()}
    assert left == {"ckpt-00000001.safetensors", alive.name, elsewhere.name}


def test_a_killed_writers_temporaries_go_when_its_cache_or_run_folder_is_next_opened(tmp_path):
    """Not only on the next write: a cache hit writes nothing, and a killed prepare's temporary is as big as the dataset."""
    import subprocess

    from facegan.data.prepare import resolve_dataset

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cache, run = tmp_path / "cache", tmp_path / "run"
    prepared = resolve_dataset("procedural:8", 16, cache_dir=cache, progress=False)
    stale = [cache / f".{prepared.name}.{fileio._HOST}-{dead.pid}-0123abcd.tmp"]
    stale += [folder / f".x.{fileio._HOST}-{dead.pid}-89abcdef.tmp" for folder in (run, run / "checkpoints", run / "samples")]
    alive = cache / f".other.npy.{fileio._HOST}-{os.getppid()}-00000000.tmp"  # a live writer's: kept
    for p in (*stale, alive):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a dataset")
    assert resolve_dataset("procedural:8", 16, cache_dir=cache, progress=False) == prepared  # a hit
    assert not stale[0].exists() and alive.exists()
    toolbox.start(replace(CFG, out=str(run)), resume=True)  # what train / train-sr --resume does first
    assert not any(p.exists() for p in stale)


# ---- 2. special and odd files in a dataset ---------------------------------------------------

def test_special_files_in_a_folder_are_named_skips(tmp_path):
    rng = random.Random(0)
    data = tmp_path / "faces"
    _faces(data, 5, rng)
    expected = special_files(data, rng)
    (data / "dir.jpg").mkdir()  # a folder with an image name is not an entry to read
    code, out, err = cli("prepare", data, "--res", "16", "--out", tmp_path / "x.npy", "--workers", "2")
    assert code == 0, err
    manifest = json.loads((tmp_path / "x.npy.json").read_text())
    assert manifest["count"] == 5
    reasons = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(expected)
    for name, needle in expected.items():
        assert needle in reasons[name], (name, reasons[name])
    assert not temporaries(tmp_path)


def test_training_on_a_folder_of_special_files_works(tmp_path):
    rng = random.Random(1)
    data = tmp_path / "faces"
    _faces(data, 20, rng)
    special_files(data, rng)
    code, out, err = cli("train", data, "--preset", "quick", "--batch", "8", "--max-images", "16", "--out",
                         tmp_path / "run", "--no-progress")
    assert code == 0, err
    assert checkpoint.list_checkpoints(tmp_path / "run")


def test_hostile_zip_members_are_named_skips_and_bounded(tmp_path):
    import resource

    rng = random.Random(2)
    expected = hostile_zip(tmp_path / "faces.zip", rng)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manifest = prepare(tmp_path / "faces.zip", tmp_path / "x.npy", 16, workers=1, progress=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert manifest["count"] == 4
    reasons = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(expected)
    for name, needle in expected.items():
        assert needle in reasons[name], (name, reasons[name])
    assert grown_mb < 60  # the 80 MB member was never inflated


def test_failed_prepare_leaves_nothing_at_the_final_name(tmp_path):
    data = tmp_path / "faces"
    data.mkdir()
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    code, _, err = cli("prepare", data, "--res", "16", "--out", tmp_path / "x.npy")
    assert "no usable images" in one_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


def test_a_pipe_or_device_as_the_dataset_itself_is_one_line(tmp_path):
    os.mkfifo(tmp_path / "faces.zip")
    code, _, err = cli("prepare", tmp_path / "faces.zip", "--res", "16", "--out", tmp_path / "x.npy")
    assert "neither a folder nor a regular file" in one_error(code, err)


@pytest.mark.parametrize("manifest", ["[1, 2]", '{"format": "facegan-prepared-1", "res": "16"}', "not json",
                                      "[" * 100_000 + "]" * 100_000])
def test_a_doctored_prepared_file_is_one_line(tmp_path, manifest):
    prepare("procedural:8", tmp_path / "x.npy", 32, progress=False)  # quick is 32²: only the manifest is wrong
    (tmp_path / "x.npy.json").write_text(manifest)
    code, _, err = cli("train", tmp_path / "x.npy", "--preset", "quick", "--out", tmp_path / "run", "--max-images", "8")
    assert "run `facegan prepare` again" in one_error(code, err)


def test_idx_files_that_are_pipes_or_truncated_fail_once_with_one_line(tmp_path):
    import gzip

    pipe = tmp_path / "pipe"
    pipe.mkdir()
    os.mkfifo(pipe / "train-images-idx3-ubyte")
    code, _, err = cli("prepare", pipe, "--res", "28", "--out", tmp_path / "p.npy")
    assert "cannot read IDX file" in one_error(code, err) and "named pipe" in err
    cut = tmp_path / "cut"
    cut.mkdir()
    header = (0x803).to_bytes(4, "big") + (3000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (cut / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(28 * 28 * 10)))  # 10 of 3000 images
    code, _, err = cli("prepare", cut, "--res", "28", "--out", tmp_path / "c.npy", "--workers", "1")
    assert "does not inflate to the 3000 images its header declares" in one_error(code, err)


def test_report_on_a_doctored_run_folder(tiny_cfg):
    run = loop.train(tiny_cfg, progress=False).run
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 1, "loss_G": 1.0}\n{"step": 2, "images": 32, "loss_D": "high"}\n' + "[" * 50_000 + "\n")
    (run / "eval" / "x").mkdir(parents=True)
    (run / "eval" / "x" / "eval.json").write_text("nope")
    code, _, err = cli("report", run)
    assert code == 0, err  # damaged extras are left out, the rest is reported
    good = (run / "config.json").read_text()
    for bad, needle in (("garbage", "not a readable run config"), ("[1, 2]", "not a readable run config"),
                        ('{"batch": "x", "model": {}}', "batch")):
        (run / "config.json").write_text(bad)
        code, _, err = cli("report", run)
        assert needle in one_error(code, err)
    (run / "config.json").write_text(good)


def test_out_of_memory_is_one_line_not_a_bug():
    from facegan.cli import error_line, exit_code

    for e in (MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"),
              type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2.00 GiB")):
        assert error_line(e).startswith("out of memory") and exit_code(e) == 2
    assert exit_code(ZeroDivisionError()) == 1 and "facegan bug" in error_line(ZeroDivisionError())


def test_a_checkpoint_saved_before_the_first_step_loads_and_resumes(tiny_cfg):
    """A budget that ends before step 1 (a tiny --max-time) saves the initial state: no Adam moments yet."""
    from facegan.models.dcgan import build

    torch.manual_seed(0)
    G, D = build(tiny_cfg.model)
    opt_g, opt_d = loop.optimizers(G, D, tiny_cfg, torch.device("cpu"))
    state = loop._state(0, tiny_cfg.batch, tiny_cfg, G, D, None, opt_g, opt_d, torch.Generator(), torch.device("cpu"))
    checkpoint.save(tiny_cfg.out, 0, *state)
    assert not any(k.startswith("optG.") for k in checkpoint.load(tiny_cfg.out)[0])
    assert loop.train(tiny_cfg, resume=True, progress=False).steps == 8


# ---- 3. checkpoint contents trusted past the header ------------------------------------------

VARIANTS = checkpoint_variants(*(lambda t, m: (t, {"format": checkpoint.FORMAT, "step": 1, **m}))(*real_state(CFG)))


@pytest.mark.parametrize("case", sorted(set(VARIANTS) - set(TRAINING_RULE_CASES)))
def test_doctored_checkpoints_are_refused_by_every_loader(tmp_path, case):
    data, needle = VARIANTS[case]
    path = tmp_path / "run" / "checkpoints" / "ckpt-00000001.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    with pytest.raises(FaceganError, match=None) as info:
        checkpoint.load(path)
    assert needle in str(info.value)
    for args in (("generate", path, "--grid", tmp_path / "g.png"), ("generate", tmp_path / "run", "-n", "2"),
                 ("interpolate", path, "--out", tmp_path / "w.gif"), ("train", "--resume", tmp_path / "run"),
                 ("evaluate", path, "-n", "2"), ("train-sr", "--resume", tmp_path / "run"),
                 ("upscale", tmp_path, "--model", path, "--out", tmp_path / "up")):
        code, _, err = cli(*args)
        line = one_error(code, err)
        assert needle in line or args[0] == "train-sr" and "is a GAN run" in line, (args, err)  # header fine, data not
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "up").exists() and not temporaries(tmp_path)


@pytest.mark.parametrize("case", TRAINING_RULE_CASES)
def test_a_doctored_training_option_refuses_resume_not_sampling(tmp_path, case):
    """Loaders check what building and reading the nets needs; the training rules apply on (re)start,
    so an option rule added later never makes an older run unreadable."""
    data, needle = VARIANTS[case]
    path = tmp_path / "run" / "checkpoints" / "ckpt-00000001.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    code, _, err = cli("generate", path, "--grid", tmp_path / "g.png")
    assert code == 0, err
    code, _, err = cli("train", "--resume", tmp_path / "run", "--max-images", "128")
    assert needle in one_error(code, err)


def test_memory_bomb_config_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    data, _ = VARIANTS["memory bomb config"]
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(data)
    assert path.stat().st_size < 4096
    built = []
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda self, *a, **k: built.append(1) or None)  # nothing may be built
    with pytest.raises(FaceganError, match="g_width must be in 1 … 4096, got 200000"):
        checkpoint.load(path)
    assert not built


def test_valid_checkpoint_still_loads_and_generates(tmp_path):
    path = _checkpoint_file(tmp_path)
    code, out, err = cli("generate", path, "--grid", tmp_path / "g.png")
    assert code == 0, err
    assert Image.open(tmp_path / "g.png").size[0] > 16


# ---- 4. CLI values and filesystem errors ------------------------------------------------------

@pytest.mark.parametrize("args,needle", BAD_VALUES)
def test_bad_values_are_one_line_before_any_work(tmp_path, args, needle):
    ckpt = _checkpoint_file(tmp_path / "model")
    (tmp_path / "afile").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = cli(*[a.format(tmp=tmp_path, ckpt=ckpt) for a in args], cwd=tmp_path)
    assert needle in one_error(code, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_read_only_location_is_one_line_before_any_work(tmp_path):
    """/sys refuses new entries even to root (for whom permission bits, and os.access, say yes)."""
    if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and os.geteuid() != 0:
        pytest.skip("no read-only system folder here")
    code, _, err = cli("train", "procedural:64", "--out", "/sys/facegan-run", "--max-images", "16")
    line = one_error(code, err)
    assert "/sys" in line and ("read-only" in line or "ermission denied" in line or "not permitted" in line)
    assert not list(Path(os.environ["FACEGAN_CACHE"]).iterdir())  # failed before preparing any data


def test_os_errors_anywhere_are_one_line_naming_the_path(tmp_path, monkeypatch):
    """The error boundary: an OSError from any layer becomes `error: PATH: reason (advice)`, exit 2."""
    def fail(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "secret.png"))

    monkeypatch.setattr("facegan.viz.save_grid", fail)
    code, _, err = cli("generate", _checkpoint_file(tmp_path), "--grid", tmp_path / "g.png")
    line = one_error(code, err)
    assert str(tmp_path / "secret.png") in line and "permission denied" in line.lower()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["env", "flag"])
def test_debug_shows_the_traceback(how):
    import subprocess

    env = {**os.environ, "FACEGAN_DEBUG": "1" if how == "env" else "", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    args = ["train", "--lr-g", "nan"] if how == "env" else ["--debug", "train", "--lr-g", "nan"]
    p = subprocess.run([sys.executable, "-m", "facegan", *args], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "Traceback" in p.stderr and "FaceganError: --lr-g" in p.stderr


@pytest.mark.slow
def test_full_disk_during_training_keeps_the_last_checkpoint_and_says_so(tiny_cfg, monkeypatch):
    first = loop.train(tiny_cfg, progress=False)
    good = checkpoint.list_checkpoints(first.run)[-1]
    before = good.read_bytes()
    real_save = checkpoint._serialize

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_serialize", full)
    more = replace(tiny_cfg, max_images=tiny_cfg.max_images * 2)
    with pytest.raises(FaceganError) as info:
        loop.train(more, resume=True, progress=False)
    msg = str(info.value)
    assert "the disk is full" in msg and f"the last checkpoint {good} is intact" in msg and "--resume" in msg
    assert good.read_bytes() == before and not temporaries(first.run)
    monkeypatch.setattr(checkpoint, "_serialize", real_save)  # space freed: the resume works
    assert loop.train(more, resume=True, progress=False).steps == 16


# ---- 5. divergence that slips through ---------------------------------------------------------

def test_non_finite_buffers_are_never_written(tmp_path):
    tensors, meta = real_state(CFG)
    key = next(k for k in tensors if k.endswith("running_var"))
    prev = checkpoint.save(tmp_path, 1, tensors, meta)
    with pytest.raises(FaceganError, match=f"the run diverged: {key}") as info:
        checkpoint.save(tmp_path, 2, {**tensors, key: torch.full_like(tensors[key], float("inf"))}, meta)
    assert info.value.exit_code == 3 and f"last good checkpoint: {prev}" in str(info.value)
    assert checkpoint.list_checkpoints(tmp_path) == [prev] and not temporaries(tmp_path)


def test_a_run_whose_buffers_blow_up_stops_with_exit_3(tiny_cfg, monkeypatch):
    real_step = loop.gan_step

    def poisoned(G, D, *a, **k):
        out = real_step(G, D, *a, **k)
        for name, buf in D.named_buffers():
            if name.endswith("running_var"):
                buf.fill_(float("inf"))  # losses stay finite; only the buffers are gone
        return out

    monkeypatch.setattr(loop, "gan_step", poisoned)
    with pytest.raises(FaceganError, match="the run diverged") as info:
        loop.train(tiny_cfg, progress=False)
    assert info.value.exit_code == 3 and not checkpoint.list_checkpoints(tiny_cfg.out)


def test_exploding_loss_warns_once(tiny_cfg, monkeypatch, capsys):
    real_step = loop.gan_step
    monkeypatch.setattr(loop, "gan_step", lambda *a, **k: real_step(*a, **k) * torch.tensor([1e5, 1e5, 1, 1, 1]))
    loop.train(tiny_cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "exploding" in err


# ---- 6. resume fragility ----------------------------------------------------------------------

@pytest.mark.slow
def test_torn_metrics_line_does_not_stop_a_resume(tiny_cfg):
    first = loop.train(tiny_cfg, progress=False)
    metrics = first.run / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write("[" * 100_000 + "\n")  # an edited line the parser cannot nest into
        f.write('{"step": 99, "loss_D": 0.6')  # what a crash mid-write leaves
    assert all(r["step"] <= first.steps for r in read_metrics(metrics))
    again = loop.train(replace(tiny_cfg, max_images=tiny_cfg.max_images * 2), resume=True, progress=False)
    lines = metrics.read_text().splitlines()
    assert again.steps == 16 and all(json.loads(line)["step"] <= 16 for line in lines)
    assert again.start_step == 8 and again.start_images == 128


def test_resume_from_another_directory_with_a_relative_data_path(tmp_path):
    rng = random.Random(3)
    _faces(tmp_path / "proj" / "faces", 16, rng)
    code, _, err = cli("train", "faces", "--preset", "quick", "--batch", "8", "--max-images", "16", "--out", "run",
                       "--no-progress", cwd=tmp_path / "proj")
    assert code == 0, err
    saved = json.loads((tmp_path / "proj" / "run" / "config.json").read_text())["data"]
    assert saved == str(tmp_path / "proj" / "faces")
    code, out, err = cli("train", "--resume", tmp_path / "proj" / "run", "--max-images", "32", "--no-progress",
                         cwd=tmp_path)
    assert code == 0, err
    assert "trained 2 steps (16 images)" in out and "the run is at step 4, 32 images in total" in out


def test_truncate_metrics_is_atomic(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(10)))

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        toolbox.truncate_metrics(metrics, 4)
    assert len(metrics.read_text().splitlines()) == 10 and not temporaries(tmp_path)  # untouched, no temp left


def test_load_image_refuses_elongated_strips():
    from facegan.data.images import BadImage, load_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((10, 4000, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(BadImage, match="too elongated"):
        load_image(buf.getvalue(), 32)
