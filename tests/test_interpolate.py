"""Latent walks (slerp / lerp), the truncation trick, and the `interpolate` / `generate --truncation` commands."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, real_state
from PIL import Image
from typer.testing import CliRunner

from facegan import checkpoint, sample, saved, viz
from facegan.cli import app
from facegan.config import TrainConfig
from facegan.errors import FaceganError
from facegan.models.dcgan import Generator, latents


@pytest.fixture
def vivid(tmp_path):
    """A run folder whose checkpoint holds a random 16² G with large weights: unlike an 8-step
    tiny run (near-uniform grey), every latent gives a visibly different face."""
    torch.manual_seed(0)
    G = Generator(TINY)
    for p in G.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, 0.0, 0.2)
    run = tmp_path / "run"
    tensors, meta = real_state(TrainConfig(preset="tiny", batch=4, max_images=64, model=TINY))
    checkpoint.save(run, 1, {**tensors, **{f"G.{k}": v for k, v in G.state_dict().items()}}, meta)
    return run


def _cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_slerp_keeps_the_radius_that_lerp_loses():
    a, b = latents(1, 128, 3)[0], latents(1, 128, 17)[0]
    arc = sample.slerp(a, b, torch.linspace(0, 1, 11))
    assert torch.allclose(arc[0], a, atol=1e-5) and torch.allclose(arc[-1], b, atol=1e-5)
    lo, hi = sorted((a.norm().item(), b.norm().item()))
    assert all(0.99 * lo <= n <= 1.01 * hi for n in arc.norm(dim=1).tolist())
    circle = sample.slerp(a, b * a.norm() / b.norm(), torch.linspace(0, 1, 11))  # endpoints on one sphere:
    cos = torch.nn.functional.cosine_similarity(circle[:-1], circle[1:]).tolist()
    assert max(cos) - min(cos) < 1e-5  # equal angular steps along its great circle
    assert torch.allclose(circle.norm(dim=1), a.norm().expand(11), rtol=1e-5)
    line = sample.lerp(a, b, 0.5)[0]
    assert line.norm() < 0.8 * lo  # the midpoint of the chord sinks towards the origin
    assert torch.allclose(sample.slerp(a, a, 0.3)[0], a)  # parallel endpoints: no division by sin(0)


@pytest.mark.parametrize("loop,frames,at", [(True, 60, {0: 3, 20: 17, 40: 42}), (False, 61, {0: 3, 30: 17, 60: 42})])
def test_walks_visit_every_seed_and_loop_without_repeating(loop, frames, at):
    walk = sample.walk_latents(32, [3, 17, 42], frames, loop=loop)
    assert walk.shape == (frames, 32)
    for k, seed in at.items():
        assert torch.allclose(walk[k], latents(1, 32, seed)[0], atol=1e-5)
    if loop:  # one step before the start again, never the start itself
        assert not torch.allclose(walk[-1], walk[0], atol=1e-3)
    for bad in ([3], []):
        with pytest.raises(FaceganError, match="two seeds"):
            sample.walk_latents(32, bad, frames)
    with pytest.raises(FaceganError, match="at least 2 frames"):
        sample.walk_latents(32, [3, 17], 1)


def test_truncation_bounds_every_component_and_depends_only_on_seed_index_psi():
    psi = 0.7
    z, plain = sample.truncated_latents(64, 32, 5, truncation=psi), latents(64, 32, 5)
    assert z.abs().max() <= psi
    kept = plain.abs() <= psi
    assert torch.equal(z[kept], plain[kept]) and (~kept).float().mean() > 0.4  # only the far ones redrawn
    assert torch.equal(sample.truncated_latents(1, 32, 5, start=10, truncation=psi)[0], z[10])  # any batch
    assert torch.equal(sample.truncated_latents(64, 32, 5, truncation=psi), z)  # reproducible
    assert torch.equal(sample.truncated_latents(64, 32, 5), plain)  # None = off
    assert not torch.equal(sample.truncated_latents(64, 32, 5, truncation=0.5), z)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(FaceganError, match="threshold"):
            sample.truncated_latents(1, 32, 5, truncation=bad)


def test_truncated_components_follow_the_truncated_normal():
    z = sample.truncated_latents(3000, 32, 1, truncation=1.0).double()
    phi, mass = math.exp(-0.5) / math.sqrt(2 * math.pi), math.erf(1 / math.sqrt(2))
    assert z.var().item() == pytest.approx(1 - 2 * phi / mass, abs=0.01)  # 0.291: N(0,1) cut at ±1
    assert z.mean().item() == pytest.approx(0, abs=0.01)


def test_generate_with_truncation_changes_faces_reproducibly(vivid, tmp_path):
    G = saved.load_generator(vivid)
    assert np.array_equal(sample.faces(G, 6, seed=2), G.sample(6, seed=2))  # ψ off: the same faces as ever
    truncated = sample.faces(G, 6, seed=2, truncation=0.5)
    assert np.abs(truncated.astype(int) - G.sample(6, seed=2)).mean() > 5
    _cli("generate", vivid, "-n", "4", "--seed", "2", "--truncation", "0.5", "--out", tmp_path / "gen")
    manifest = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    assert manifest["truncation"] == 0.5 and len(manifest["images"]) == 4
    _cli("generate", vivid, "-n", "1", "--seed", "2", "--start", "3", "--truncation", "0.5", "--out", tmp_path / "one")
    one, same = (np.asarray(Image.open(tmp_path / d / "seed2-000003.png")).astype(int) for d in ("one", "gen"))
    assert np.abs(one - same).max() <= 1 and np.abs(one - truncated[3]).max() <= 1
    _cli("generate", vivid, "--grid", tmp_path / "grid.png", "--rows", "2", "--truncation", "0.5")
    assert Image.open(tmp_path / "grid.png").size == (38, 38)


def test_interpolate_writes_gif_strip_and_mp4(vivid, tmp_path):
    _cli("interpolate", vivid, "--seeds", "3,17,42", "--frames", "12", "--out", tmp_path / "walk.gif", "--fps", "10")
    with Image.open(tmp_path / "walk.gif") as im:
        assert im.n_frames == 12 and im.size == (16, 16) and im.info["loop"] == 0
        first = np.asarray(im.convert("RGB")).astype(int)
    face3 = sample.faces(saved.load_generator(vivid), 1, seed=3)[0]
    assert np.abs(first - face3).mean() < 8  # starts on face (3, 0), up to the GIF palette

    _cli("interpolate", vivid, "--seeds", "3,17,42", "--frames", "60", "--out", tmp_path / "strip.png")
    assert Image.open(tmp_path / "strip.png").size == (2 + 10 * 18, 2 + 3 * 18)  # 3 segments × 10 faces
    _cli("interpolate", vivid, "--seeds", "3,17,42", "--frames", "4", "--no-loop", "--linear", "--out", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size == (2 + 4 * 18, 2 + 2 * 18)  # 2 segments × 4 faces
    if viz.video_available():
        _cli("interpolate", vivid, "--seeds", "1,2", "--frames", "8", "--out", tmp_path / "walk.mp4")
        assert (tmp_path / "walk.mp4").read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize("args,needle", [
    (["--seeds", "3,x"], "comma-separated integers"),
    (["--seeds", "3"], "two seeds"),
    (["--out", "walk.avi"], ".gif, .mp4 or .png"),
    (["--truncation", "0"], "threshold"),
])
def test_interpolate_bad_input_is_one_error(vivid, tmp_path, args, needle):
    result = CliRunner().invoke(app, ["interpolate", str(vivid), *args])
    assert isinstance(result.exception, FaceganError) and needle in str(result.exception)


def test_mp4_without_imageio_ffmpeg_says_what_to_do(vivid, tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "video_available", lambda: False)
    with pytest.raises(FaceganError, match=r"imageio-ffmpeg.*\.gif"):
        sample.write_walk(saved.load_generator(vivid), tmp_path / "w.mp4", [1, 2])
