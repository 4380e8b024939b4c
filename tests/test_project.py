"""`facegan project`: the search finds a face the generator can make, deterministically, and writes what it found."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image
from safetensors import safe_open
from test_cli import SRC, facegan_in_process

from facegan import project as proj
from facegan import viz
from facegan.errors import FaceganError
from facegan.models.dcgan import Generator, to_uint8

ENV = {**__import__("os").environ, "PYTHONPATH": SRC}
NO_FEATURES = {"feature": 0.0}


@pytest.fixture(scope="module")
def G() -> Generator:
    """A 16² generator whose faces differ (a fresh one draws nearly flat grey): conv weights N(0, 0.2²)."""
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    for p in G.parameters():
        if p.ndim == 4:
            p.data.normal_(0, 0.2)
    return G


def test_the_search_recovers_a_face_the_generator_made(G):
    target = G.sample(1, seed=77)[0]
    result = proj.project(G, target, steps=150, starts=4, seed=1, weights=NO_FEATURES, progress=False)
    random_faces = G.sample(16, seed=5)
    typical = np.median([proj.distance(f, target) for f in random_faces])
    assert proj.distance(result.face, target) < 0.3 * typical
    assert result.losses[-1]["pixel"] < 0.2 * result.losses[0]["pixel"]
    assert np.array_equal(result.face, to_uint8(G(result.z[None]))[0])  # the face is the latent's face


def test_more_starts_never_do_worse_and_the_seed_decides_everything(G):
    target = G.sample(1, seed=91)[0]
    a = proj.project(G, target, steps=40, starts=1, seed=3, weights=NO_FEATURES, progress=False)
    b = proj.project(G, target, steps=40, starts=1, seed=3, weights=NO_FEATURES, progress=False)
    assert torch.equal(a.z, b.z) and np.array_equal(a.face, b.face)
    c = proj.project(G, target, steps=40, starts=1, seed=4, weights=NO_FEATURES, progress=False)
    assert not torch.equal(a.z, c.z)
    assert a.z.shape == (TINY.z_dim,) and len(a.losses) == 40 and a.start == 0


def test_a_target_of_the_wrong_size_is_one_line(G):
    with pytest.raises(FaceganError, match="16, 16, 3"):
        proj.project(G, np.zeros((32, 32, 3), np.uint8), steps=2, progress=False)


def test_write_gives_every_file_and_the_latent_regenerates_the_face(G, tmp_path):
    result = proj.project(G, G.sample(1, seed=2)[0], steps=30, starts=2, seed=0, weights=NO_FEATURES, progress=False)
    files = proj.write(result, tmp_path, {"seed": 0, "steps": 30})
    names = {f.name for f in files}
    assert {"fitted.png", "target.png", "latent.safetensors", "loss.json", "loss.png", "progress.gif"} <= names
    z = proj.load_latent(tmp_path / "latent.safetensors")
    assert np.array_equal(to_uint8(G(z))[0], np.asarray(Image.open(tmp_path / "fitted.png")))
    with safe_open(str(tmp_path / "latent.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["facegan"]) == {"seed": 0, "steps": 30}
    assert len(json.loads((tmp_path / "loss.json").read_text())) == 30
    gif = Image.open(tmp_path / "progress.gif")
    assert gif.size == (32, 16)  # target | fit, side by side


def test_nn_scale_is_the_median_nearest_other_distance():
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    imgs[1] += 10
    imgs[2] += 40  # distances: 0–1 = 10·√192, 1–2 = 30·√192, 0–2 = 40·√192
    unit = np.sqrt(8 * 8 * 3)
    assert proj.nn_scale(imgs) == pytest.approx(10 * unit)


@pytest.mark.slow
def test_project_command_writes_the_folder_and_reports_the_scale(tiny_cfg, tmp_path):
    from facegan.train.loop import train

    cfg = replace(tiny_cfg, max_images=16 * 4, eval_every=0)
    train(cfg, progress=False)
    photo = tmp_path / "me.png"
    viz.save_image(np.asarray(Image.fromarray(Generator(TINY).eval().sample(1, seed=3)[0]).resize((80, 80))), photo)
    out = tmp_path / "fit"
    run = subprocess.run([sys.executable, "-m", "facegan", "project", str(photo), "--model", cfg.out, "--steps", "20",
                          "--starts", "2", "--out", str(out)], capture_output=True, text=True, env=ENV)
    assert run.returncode == 0, run.stderr
    assert "median distance between a training face" in run.stdout  # the run's procedural data is found again
    assert (out / "fitted.png").is_file() and (out / "latent.safetensors").is_file() and (out / "loss.png").is_file()
    loss = json.loads((out / "loss.json").read_text())
    assert "feature" in loss[0]  # the Inception term ran, on 16² faces enlarged for it
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    run = facegan_in_process("project", str(bad), "--model", cfg.out, "--steps", "2")
    assert run.returncode == 2 and run.stderr.startswith("error:") and run.stderr.count("\n") == 1

