"""SIGKILL at random moments, and a file-size limit mid-run: real processes, as a failing machine does it.

- ``prepare`` killed at random moments leaves no decode worker alive and no temporary file once
  the next run has swept; the next run completes.
- ``train`` with the faces recipe's EMA (``--recipe b16-ema``) killed at random moments, then
  resumed until done, ends bit-identical — live G, EMA G, D, optimizers, RNG states — to a run
  that was never interrupted.
- A write refused by the operating system (``ulimit -f``: the EFBIG a full quota gives) ends the
  run with one line naming the intact last checkpoint; once the limit is gone, resume works.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hostile import good_image
from safetensors.torch import load_file
from test_cli import SRC, _one_error_line, facegan_in_process

from facegan import checkpoint, fileio

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(*args: object, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "facegan", *map(str, args)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def _run(*args: object, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facegan", *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300, **kw)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _temporaries(folder: Path) -> list[Path]:
    return list(folder.rglob("*.tmp"))


def test_prepare_killed_at_random_moments(tmp_path):
    rng = random.Random(0)
    src = tmp_path / "photos"
    src.mkdir()
    photos = [good_image(rng, "JPEG", (640, 640)) for _ in range(4)]
    for i in range(800):  # a few seconds of decoding on 2 workers: the kills land mid-way
        (src / f"p{i:03d}.jpg").write_bytes(photos[i % 4])
    out = tmp_path / "out" / "faces.npy"
    for attempt in range(3):
        proc = _start("prepare", src, "--res", "256", "--out", out, "--workers", "2")
        deadline = time.time() + 60
        while time.time() < deadline and len(_children(proc.pid)) < 2:
            time.sleep(0.01)
        workers = _children(proc.pid)
        assert workers, proc.stderr.read() if proc.poll() is not None else "no workers started"
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not any(map(_alive, workers)), f"attempt {attempt}: decode workers outlived their killed parent"
        if proc.returncode == -signal.SIGKILL:  # killed mid-decode: nothing at the final name
            assert not out.exists() and not out.with_name(out.name + ".json").exists()
    p = _run("prepare", src, "--res", "256", "--out", out, "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert "packed:     800 images" in p.stdout
    assert not _temporaries(tmp_path / "out")  # the killed runs' temporaries were swept


STEPS = 30  # checkpoints every 10 steps: each costs the EMA BatchNorm recalibration and the run's pictures


def _train_args(run: Path) -> list[object]:
    return ["train", "procedural:256", "--preset", "quick", "--recipe", "b16-ema", "--out", run, "--max-images",
            16 * STEPS, "--ckpt-every", 10, "--log-every", 5, "--no-progress"]


def test_train_with_ema_killed_at_random_moments_resumes_bit_exact(tmp_path):
    ref = tmp_path / "ref"
    p = facegan_in_process(*_train_args(ref))  # the uninterrupted reference: same code, same thread count
    assert p.returncode == 0, p.stderr
    rng = random.Random(1)
    run = tmp_path / "run"
    kills = 0
    for _ in range(2):  # each process is killed at a random moment after it wrote a checkpoint of its own
        before = len(checkpoint.list_checkpoints(run))
        args = ["train", "--resume", run, "--max-images", 16 * STEPS, "--no-progress"] if before else _train_args(run)
        proc = _start(*args)
        deadline = time.time() + 120  # the first checkpoint takes ≈3 s here, far longer on a loaded machine
        while time.time() < deadline and proc.poll() is None and len(checkpoint.list_checkpoints(run)) <= before:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # somewhere in the steps (or the write) after it
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for ck in checkpoint.list_checkpoints(run):  # every checkpoint left behind is whole
            checkpoint.load(ck)
    assert kills >= 1, proc.stderr.read()
    p = _run("train", "--resume", run, "--max-images", 16 * STEPS, "--no-progress")
    assert p.returncode == 0, p.stderr
    a = load_file(str(checkpoint.list_checkpoints(ref)[-1]))
    b = load_file(str(checkpoint.list_checkpoints(run)[-1]))
    assert checkpoint.list_checkpoints(run)[-1].name == f"ckpt-{STEPS:08d}.safetensors"
    assert a.keys() == b.keys() and any(k.startswith("G_ema.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert not _temporaries(run / "checkpoints")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, STEPS + 1, 5))  # the killed runs' lines past their checkpoint were dropped, none twice


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_refused_write_mid_run_keeps_the_last_checkpoint_and_resume_works(tmp_path):
    run = tmp_path / "run"
    base = ["train", "procedural:256", "--preset", "quick", "--batch", "16", "--ckpt-every", "2", "--no-progress"]
    p = facegan_in_process(*base, "--out", run, "--max-images", 32)  # only the refused run needs its own process
    assert p.returncode == 0, p.stderr
    good = checkpoint.list_checkpoints(run)[-1]
    before = good.read_bytes()
    p = _run("train", "--resume", run, "--max-images", 64, "--no-progress", preexec_fn=_file_size_limit(1 << 20))
    assert p.returncode == 2, p.stderr
    line = _one_error_line(p)
    assert "File too large" in line and f"the last checkpoint {good} is intact" in line and f"--resume {run}" in line
    assert good.read_bytes() == before and not _temporaries(run)
    p = facegan_in_process("train", "--resume", run, "--max-images", 64, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "the run is at step 4, 64 images in total" in p.stdout


def test_a_checkpoint_write_killed_midway_leaves_only_a_temporary_the_next_write_sweeps(tmp_path):
    """The whole file goes through our own temporary (not a writer library's hidden one), so the sweep finds it."""
    script = ("import sys, torch; from facegan import checkpoint\n"
              "t = {'x': torch.ones(96 << 20 >> 2)}\n"  # 96 MB: a write that takes a while
              "sys.stdout.write('go\\n'); sys.stdout.flush()\n"
              "while True: checkpoint.write_atomic(__import__('pathlib').Path(sys.argv[1]), t, {})\n")
    target = tmp_path / "checkpoints" / "ckpt-00000001.safetensors"
    rng = random.Random(2)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)], env=ENV, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "go\n"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()
        names = [p.name for p in target.parent.iterdir() if p != target]
        assert all(fileio._TMP.match(n) for n in names), names  # nothing but our own, attributable temporaries
    checkpoint.write_atomic(target.with_name("ckpt-00000002.safetensors"), {"x": torch.zeros(3)}, {})
    assert sorted(p.name for p in target.parent.iterdir()) <= ["ckpt-00000001.safetensors", "ckpt-00000002.safetensors"]
