import os
import pickle
import stat

import pytest
import torch
from conftest import TINY, real_state

from facegan import checkpoint
from facegan.config import TrainConfig
from facegan.errors import FaceganError

CFG = TrainConfig(preset="tiny", batch=4, max_images=64, model=TINY)


def _tensors(v: float) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = real_state(CFG)
    return {**tensors, _first(tensors): torch.full_like(tensors[_first(tensors)], v)}, meta


def _first(tensors: dict[str, torch.Tensor]) -> str:
    return min(k for k in tensors if k.startswith("G.") and tensors[k].is_floating_point())


def test_roundtrip_and_keep_last_k(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, step, *_tensors(step), keep=2)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000030.safetensors", "ckpt-00000040.safetensors"]
    tensors, meta = checkpoint.load(tmp_path)  # a run folder means its latest checkpoint
    assert meta["step"] == 40 and meta["config"] == CFG.to_dict()
    assert bool((tensors[_first(tensors)] == 40.0).all())
    mode = stat.S_IMODE(os.stat(checkpoint.list_checkpoints(tmp_path)[-1]).st_mode)
    assert mode == 0o666 & ~_umask()  # like every other file of the run, not safetensors' 0600


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_crash_while_writing_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    good = checkpoint.save(tmp_path, 1, *_tensors(1))
    before = good.read_bytes()

    def crash(f, tensors, metadata):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_serialize", crash)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, *_tensors(2))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]  # no temp file left
    assert good.read_bytes() == before
    assert checkpoint.load(tmp_path)[1]["step"] == 1


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_a_pickle_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "checkpoints" / "ckpt-00000001.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(FaceganError, match="not a readable facegan checkpoint"):
        checkpoint.load(bad)
    assert not marker.exists()


def test_missing_and_foreign_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(FaceganError, match="not found"):
        checkpoint.load(tmp_path / "nope")
    with pytest.raises(FaceganError, match="no checkpoints"):
        checkpoint.load(tmp_path)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FaceganError):
        checkpoint.load(tmp_path / "other.safetensors")


def test_optimizer_state_roundtrip():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.5, 0.999))
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    tensors, groups = checkpoint.pack_optimizer("opt", opt)
    net2 = torch.nn.Linear(4, 2)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(net2.parameters(), 1.0)
    checkpoint.unpack_optimizer("opt", opt2, tensors, groups)
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.5, 0.999)
    for o in (opt, opt2):
        o.zero_grad()
    x = torch.randn(3, 4)
    net(x).sum().backward()
    net2(x).sum().backward()
    opt.step()
    opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def test_a_checkpoint_names_its_nets_and_a_false_list_is_refused(tiny_cfg, tmp_path):
    """The training loop writes which nets a checkpoint holds; readers use it (saved.has_ema), and a list
    that does not match what the file's config builds is a damaged file, not a different model."""
    from dataclasses import replace

    from facegan import saved
    from facegan.train.loop import train

    res = train(replace(tiny_cfg, ema=0.9), progress=False)
    meta = checkpoint.read_meta(res.checkpoint)
    assert meta["nets"] == ["D", "G", "G_ema"] and saved.open(res.run).has_ema
    plain = train(replace(tiny_cfg, out=str(tmp_path / "plain")), progress=False)
    assert checkpoint.read_meta(plain.checkpoint)["nets"] == ["D", "G"] and not saved.open(plain.run).has_ema
    tensors, meta = checkpoint.load(res.checkpoint)
    bad = checkpoint.save(tmp_path / "bad", meta["step"], tensors, {**meta, "nets": ["D", "G"]})
    with pytest.raises(FaceganError, match="'nets' is"):
        checkpoint.load(bad)
