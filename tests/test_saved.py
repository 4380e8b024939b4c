"""facegan.saved: one notion of a saved model, whatever path it is opened from."""

from __future__ import annotations

import pytest
import torch

from facegan import export, saved
from facegan.errors import FaceganError
from facegan.train.loop import train


def test_a_run_its_checkpoint_and_its_model_folder_open_as_one_model(tiny_cfg, tmp_path):
    res = train(tiny_cfg, progress=False)
    folder = export.export(res.run, tmp_path / "model")
    run, ckpt, model = saved.open(res.run), saved.open(res.checkpoint), saved.open(folder)
    assert (run.kind, ckpt.kind, model.kind) == (saved.GAN, saved.GAN, saved.GAN)
    assert run.home == ckpt.home == res.run and model.home == folder
    assert run.checkpoint == ckpt.checkpoint == res.checkpoint and model.is_model_folder and model.checkpoint is None
    assert run.data == model.data == tiny_cfg.data
    z = torch.randn(3, tiny_cfg.model.z_dim)
    faces = [m.generator()(z) for m in (run, ckpt, model)]
    assert torch.equal(faces[0], faces[1]) and torch.allclose(faces[0], faces[2])
    with pytest.raises(FaceganError, match="not an upscaler"):
        run.upscaler()
    with pytest.raises(FaceganError, match="keeps its architecture, not its training config"):
        model.config


def test_opening_a_model_leaves_the_callers_random_state_alone(tiny_cfg):
    res = train(tiny_cfg, progress=False)
    torch.manual_seed(5)
    want = torch.rand(4)
    torch.manual_seed(5)
    saved.load_generator(res.run)
    assert torch.equal(torch.rand(4), want)
