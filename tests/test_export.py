"""Model folders (`facegan export`): contents, loading anywhere a run is accepted, safety, ONNX parity."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_cli import SRC, facegan_in_process

from facegan import export, saved
from facegan.errors import FaceganError
from facegan.models.dcgan import latents, to_uint8
from facegan.train.loop import train

ENV = {**__import__("os").environ, "PYTHONPATH": SRC}


@pytest.fixture
def trained(tiny_cfg):
    cfg = replace(tiny_cfg, ema_kimg=0.05, max_images=16 * 6, eval_every=0)
    train(cfg, progress=False)
    return cfg


def test_export_writes_a_model_folder_that_loads_like_the_run(trained, tmp_path):
    out = export.export(trained.out, tmp_path / "model")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", "samples.png"}
    info = json.loads((out / "config.json").read_text())
    assert info["format"] == saved.FORMAT and info["generator"] == "G_ema" and info["images"] == 96
    assert info["architecture"] == trained.model.to_dict() and info["recipe"] == trained.recipe
    weights = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith(("opt", "D.", "rng")) for k in weights) and all(v.dtype != torch.float16 for v in weights.values())
    card = (out / "README.md").read_text()
    assert "96 (6 steps)" in card and "licence" in card and "samples.png" in card
    from_run = saved.load_generator(trained.out).sample(8, seed=3)
    from_folder = saved.load_generator(out).sample(8, seed=3)
    assert np.array_equal(from_run, from_folder)  # the same faces, bit for bit


@pytest.mark.slow
def test_generate_and_interpolate_accept_a_model_folder(trained, tmp_path):
    out = export.export(trained.out, tmp_path / "model")
    g = subprocess.run([sys.executable, "-m", "facegan", "generate", str(out), "-n", "5"], capture_output=True, text=True,
                       env=ENV, timeout=120)
    assert g.returncode == 0, g.stderr
    assert len(list((out / "generated" / "seed0").glob("*.png"))) == 5
    w = subprocess.run([sys.executable, "-m", "facegan", "interpolate", str(out), "--seeds", "1,2", "--frames", "4"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert w.returncode == 0 and (out / "walk.gif").is_file(), w.stderr


def test_a_doctored_model_folder_is_one_line_error(trained, tmp_path):
    out = export.export(trained.out, tmp_path / "model")
    weights = load_file(str(out / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point())
    save_file({**weights, key: torch.full_like(weights[key], float("nan"))}, str(out / "model.safetensors"))
    with pytest.raises(FaceganError, match="hold NaN/inf"):
        saved.load_generator(out)
    save_file({k: v for k, v in weights.items() if k != key}, str(out / "model.safetensors"))
    with pytest.raises(FaceganError, match="does not match its config.json architecture"):
        saved.load_generator(out)
    (out / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(FaceganError, match="not a facegan model folder"):
        saved.load_generator(out)


@pytest.mark.slow
def test_an_upscaler_ships_inside_the_folder_and_is_refused_as_the_generator(trained, tmp_path):
    from facegan.config import SRTrainConfig
    from facegan.models.srresnet import SRConfig
    from facegan.saved import load_upscaler
    from facegan.train.sr import train_sr

    sr = SRTrainConfig(data="procedural:64", out=str(tmp_path / "sr"), hr_res=32, batch=8, max_images=16,
                       model=SRConfig(scale=2, width=8, blocks=1), device="cpu")
    train_sr(sr, progress=False)
    with pytest.raises(FaceganError, match="is an upscaler run"):
        export.export(sr.out, tmp_path / "wrong")
    out = export.export(trained.out, tmp_path / "model", upscaler=sr.out)
    assert (out / "upscaler.safetensors").is_file()
    faces = saved.load_generator(out).sample(2, seed=0)
    a, b = load_upscaler(out).upscale(faces), load_upscaler(sr.out).upscale(faces)
    assert a.shape == (2, 32, 32, 3) and np.array_equal(a, b)
    with pytest.raises(FaceganError, match="has no upscaler"):
        load_upscaler(export.export(trained.out, tmp_path / "plain"))


@pytest.mark.slow
def test_onnx_export_matches_torch(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    out = export.export(trained.out, tmp_path / "model", onnx=True)
    G = saved.load_generator(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 64):
        z = latents(n, G.cfg.z_dim, seed=5)
        with torch.no_grad():
            ref = G(z)
        (got,) = session.run(None, {"z": z.numpy()})
        assert got.shape == tuple(ref.shape)
        assert np.abs(got - ref.numpy()).max() <= 1e-4
        assert np.abs(to_uint8(torch.from_numpy(got)).astype(int) - to_uint8(ref).astype(int)).max() <= 1
    assert json.loads((out / "config.json").read_text())["onnx"] == "model.onnx"
    export.export(trained.out, out)  # again without --onnx: no stale model.onnx left behind
    assert not (out / "model.onnx").exists() and json.loads((out / "config.json").read_text())["onnx"] is None


@pytest.mark.slow
def test_export_command_writes_the_folder_and_names_bad_input_in_one_line(trained, tmp_path):
    p = subprocess.run([sys.executable, "-m", "facegan", "export", trained.out, "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0 and "wrote model folder" in p.stdout and (tmp_path / "m" / "model.safetensors").is_file(), p.stderr
    bad = facegan_in_process("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "not found" in lines[0]
