"""The pictures a run folder gets while it trains: curves, labelled progress animation, the plots note."""

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageSequence

from facegan import plots, viz
from facegan.errors import FaceganError
from facegan.train.loop import train


def _frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


@pytest.mark.slow
def test_training_keeps_every_picture_up_to_date(tiny_cfg, monkeypatch):
    """Each draw rewrites the curves and grows the animation by one labelled frame."""
    seen = []  # after each draw: (frames in progress.gif, its last frame)
    update = viz.update_run_pictures

    def spy(run):
        update(run)
        frames = _frames(run / "progress.gif")
        seen.append((len(frames), frames[-1]))

    monkeypatch.setattr(viz, "update_run_pictures", spy)
    run = train(replace(tiny_cfg, sample_every=2), progress=False).run

    grids = viz.step_grids(run)
    assert [s for s, _ in grids] == [2, 4, 6, 8]
    assert [n for n, _ in seen] == [1, 2, 3, 4]
    assert all(not np.array_equal(a, b) for (_, a), (_, b) in zip(seen, seen[1:]))
    first, last = (np.asarray(Image.open(p)).astype(int) for _, p in (grids[0], grids[-1]))
    assert first.shape == last.shape == (38, 38, 3) and np.abs(first - last).max() > 0  # G moved

    frames = _frames(run / "progress.gif")
    assert len(frames) == len(grids) == 4
    # a 38-px grid is scaled ×7 (nearest) to at least 256 px, over a 24-px label strip
    assert frames[0].shape == (38 * 7 + 24, 38 * 7, 3)
    face = frames[-1][7 * 2 : 7 * 18, 7 * 2 : 7 * 18]
    assert np.abs(face[::7, ::7].astype(int) - last[2:18, 2:18]).max() <= 8  # GIF palette error only
    strip = frames[0][38 * 7 :]
    assert (strip < 128).any() and (strip[:, :, 0] > 200).mean() > 0.8  # dark text on white
    with Image.open(run / "curves.png") as im:
        assert im.size == (960, 600)  # two panels: losses, D outputs (no FID: not evaluated)
    with Image.open(run / "loss_curve.png") as im:
        assert im.size == (720, 360)
    assert (run / "progress.mp4").is_file() == viz.video_available()
    if viz.video_available():
        assert (run / "progress.mp4").read_bytes()[4:8] == b"ftyp"


def test_without_matplotlib_training_still_draws_and_says_so_once(tiny_cfg, monkeypatch, capsys):
    monkeypatch.setattr(plots, "available", lambda: False)
    monkeypatch.setattr(viz, "_noted", set())
    run = train(replace(tiny_cfg, sample_every=2), progress=False).run
    assert not (run / "curves.png").exists()
    assert (run / "loss_curve.png").is_file() and len(_frames(run / "progress.gif")) == 4
    assert capsys.readouterr().err.count("pip install 'facegan[plots]'") == 1


def _records(n: int, evals: int) -> list[dict]:
    rng = np.random.default_rng(0)
    recs = [{"step": s, "images": 64 * s, "loss_D": 1 + rng.normal(0, 0.2), "loss_G": 2 + rng.normal(0, 0.5),
             "D_x": 0.6, "D_G_z": 0.4} for s in range(10, 10 * n + 1, 10)]
    return recs + [{"step": 10 * k, "images": 640 * k, "fid": 100.0 / k} for k in range(1, evals + 1)]


@pytest.mark.parametrize("evals,height", [(0, 600), (3, 900)])
def test_curves_have_a_fid_panel_only_when_evaluated(evals, height):
    for log_x in (False, True):
        with Image.open(io.BytesIO(plots.curves_png(_records(50, evals), log_x=log_x))) as im:
            assert im.size == (960, height)


def test_smoothing_is_debiased_and_follows_the_trend():
    assert plots.smooth([3.0] * 50) == pytest.approx([3.0] * 50)  # no pull towards 0 at the start
    noisy = list(np.sin(np.linspace(0, 3, 400)) + np.random.default_rng(0).normal(0, 0.5, 400))
    smoothed = plots.smooth(noisy)
    assert np.std(np.diff(smoothed)) < np.std(np.diff(noisy)) / 10
    assert plots.smooth(noisy[:20]) == pytest.approx(noisy[:20])  # ≤ 20 points: left as they are


def test_long_runs_keep_first_and_last_grids_within_the_frame_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "MAX_FRAMES", 4)
    for s in range(1, 8):
        viz.save_grid(np.full((4, 8, 8, 3), 30 * s, np.uint8), tmp_path / "samples" / f"step-{s * 100:07d}.png")
    (tmp_path / "config.json").write_text(json.dumps({"batch": 32, "world_size": 2}))
    frames = viz.progress_frames(tmp_path)
    assert len(frames) == 4
    values = [np.asarray(f)[40, 40, 0] for f in frames]  # inside the first face (22-px grid scaled ×12)
    assert values == [30, 90, 150, 210]  # steps 100, 300, 500, 700 of 100..700


def test_animation_formats(tmp_path, monkeypatch):
    frames = [Image.new("RGB", (20, 10), (40 * i, 0, 0)) for i in range(5)]
    gif = viz.save_animation(frames, tmp_path / "a.gif", fps=10, hold_last_s=1.0)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.info["loop"] == 0
        durations = [f.info["duration"] for f in ImageSequence.Iterator(im)]
    assert durations == [100, 100, 100, 100, 1100]
    with pytest.raises(FaceganError, match=r"\.gif or an \.mp4"):
        viz.save_animation(frames, tmp_path / "a.avi", fps=10)
    monkeypatch.setattr(viz, "video_available", lambda: False)
    with pytest.raises(FaceganError, match="imageio-ffmpeg"):
        viz.save_animation(frames, tmp_path / "a.mp4", fps=10)
    assert not (tmp_path / "a.mp4").exists()
