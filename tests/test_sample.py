"""`facegan generate`'s writer: the same PNG files and manifest as the one-file-at-a-time writer it
replaced, from any number of threads, overlapped or not; opt-in bf16; errors and interruptions."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, real_state
from PIL import Image
from test_cli import _one_error_line, facegan_in_process

from facegan import checkpoint, sample, viz
from facegan.config import TrainConfig
from facegan.device import native_bf16
from facegan.errors import FaceganError
from facegan.models.dcgan import Generator


@pytest.fixture
def G():
    """A 16² generator with large random weights: every face differs, and PNGs are not trivial."""
    torch.manual_seed(0)
    G = Generator(TINY)
    for p in G.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, 0.0, 0.2)
    return G.eval()


def serial_reference(G, out, n, seed, start):
    """What `generate` wrote before the threaded writer: one face at a time, then the manifest."""
    out.mkdir(parents=True)
    imgs = G.sample(n, seed=seed, start=start)
    entries = []
    for k in range(n):
        name = f"seed{seed}-{start + k:06d}.png"
        viz.save_image(imgs[k], out / name)
        entries.append({"file": name, "seed": seed, "index": start + k})
    (out / "manifest.json").write_text(json.dumps({"z_dim": G.cfg.z_dim, "res": G.cfg.res, "generator_res": G.cfg.res,
                                                   "upscale": None, "truncation": None, "images": entries}, indent=1))


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("workers,batch", [(None, 256), (1, 7), (3, 5)])
def test_same_files_and_manifest_as_the_serial_writer(G, tmp_path, workers, batch):
    serial_reference(G, tmp_path / "ref", 37, seed=4, start=11)
    sample.generate(G, tmp_path / "new", 37, seed=4, start=11, batch_size=batch, progress=False, workers=workers)
    ref, new = files(tmp_path / "ref"), files(tmp_path / "new")
    assert list(new) == list(ref) and len(new) == 38  # 37 faces + manifest, no temporary files left
    assert all(new[name] == ref[name] for name in ref)


def test_overlapped_writing_gives_the_same_files(G, tmp_path):
    """The GPU mode (next batch computed while this one is written) is exercised on the CPU too."""
    imgs = G.sample(40, seed=1)
    for mode, overlap in (("turns", False), ("overlap", True)):
        (tmp_path / mode).mkdir()
        with viz.ImageWriter(workers=2, overlap=overlap) as w:
            for s in range(0, 40, 8):
                w.write(imgs[s:s + 8], [tmp_path / mode / f"{k}.png" for k in range(s, s + 8)])
    assert files(tmp_path / "turns") == files(tmp_path / "overlap")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "overlap" / "39.png")), imgs[39])


def test_an_interrupted_writer_leaves_only_whole_files(G, tmp_path):
    imgs = G.sample(64, seed=0)
    with pytest.raises(KeyboardInterrupt), viz.ImageWriter(workers=2, overlap=True) as w:
        w.write(imgs, [tmp_path / f"{k}.png" for k in range(64)])
        raise KeyboardInterrupt
    written = sorted(tmp_path.iterdir())
    assert all(p.suffix == ".png" for p in written)  # no temporary files
    for p in written:
        assert np.array_equal(np.asarray(Image.open(p)), imgs[int(p.stem)])


def test_a_write_error_is_one_user_error_naming_the_file(G, tmp_path):
    (tmp_path / "missing").write_bytes(b"")  # a file where the folder should be: no PNG can go there
    with pytest.raises(FaceganError, match="cannot write .*missing"), viz.ImageWriter() as w:
        w.write(G.sample(2), [tmp_path / "missing" / "a.png", tmp_path / "missing" / "b.png"])


def test_bf16_faces_are_close_and_recorded(G, tmp_path):
    fp32 = sample.faces(G, 16, seed=3)
    bf16 = sample.faces(G, 16, seed=3, precision="bf16")
    diff = np.abs(fp32.astype(int) - bf16.astype(int))
    assert 0 < diff.max() <= 16 and diff.mean() < 1, (diff.mean(), diff.max())  # bf16 ran, and stayed close
    sample.generate(G, tmp_path / "b", 4, seed=3, progress=False, precision="bf16")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["precision"] == "bf16"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "seed3-000002.png")), bf16[2])
    sample.generate(G, tmp_path / "f", 1, seed=3, progress=False)
    assert "precision" not in json.loads((tmp_path / "f" / "manifest.json").read_text())  # fp32: as before


@pytest.mark.slow
def test_cli_bf16_only_where_the_hardware_has_it(G, tmp_path):
    run = tmp_path / "run"
    tensors, meta = real_state(TrainConfig(preset="tiny", batch=4, max_images=64, model=TINY))
    checkpoint.save(run, 1, {**tensors, **{f"G.{k}": v for k, v in G.state_dict().items()}}, meta)
    p = facegan_in_process("generate", str(run), "-n", "2", "--precision", "bf16", "--device", "cpu", "--out", str(tmp_path / "gen"))
    if native_bf16(torch.device("cpu")):
        assert p.returncode == 0, p.stderr
        assert json.loads((tmp_path / "gen" / "manifest.json").read_text())["precision"] == "bf16"
    else:
        assert p.returncode == 2 and "needs native bf16" in _one_error_line(p)
        assert not (tmp_path / "gen").exists()  # refused before anything was written
    p = facegan_in_process("generate", str(run), "--precision", "fp16", "--out", str(tmp_path / "x"))
    assert p.returncode == 2 and "fp32 or bf16" in _one_error_line(p)
