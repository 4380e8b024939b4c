"""The fast path computes what the plain fp32 loop computes; resident data gives the same batches."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegan import checkpoint
from facegan.data.loader import BatchSampler, to_model_input
from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.device import resident_images
from facegan.errors import FaceganError
from facegan.models.dcgan import ModelConfig, build
from facegan.train.loop import gan_step, train

NET = ModelConfig(res=32, z_dim=16, g_width=16, d_width=16, width_cap=64)
B = 16


def _setup(channels_last: bool, seed: int = 0):
    torch.manual_seed(seed)
    G, D = build(NET)
    if channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(1)
    real = torch.rand(B, 3, NET.res, NET.res, generator=g) * 2 - 1
    z = torch.randn(B, NET.z_dim, generator=g)
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    return G, D, opt_g, opt_d, real, z


def _targets():
    return torch.ones(B), torch.zeros(B)


def _reference_step(G, D, opt_g, opt_d, real, z):
    """pytorch/examples dcgan: D's weight gradients are computed in the G step and discarded."""
    D.zero_grad()
    fake = G(z)
    rl, fl = D(real), D(fake.detach())
    loss_d = F.binary_cross_entropy_with_logits(rl, torch.ones(B)) + F.binary_cross_entropy_with_logits(fl, torch.zeros(B))
    loss_d.backward()
    opt_d.step()
    G.zero_grad()
    loss_g = F.binary_cross_entropy_with_logits(D(fake), torch.ones(B))
    loss_g.backward()
    opt_g.step()
    return loss_d.item(), loss_g.item()


def _params(*nets):
    return torch.cat([p.detach().flatten() for n in nets for p in n.parameters()])


def test_gan_step_equals_reference_loop_and_freezes_d_only_for_g():
    G, D, og, od, real, z = _setup(False)
    ref = _reference_step(G, D, og, od, real, z)
    after_ref = _params(G, D)

    G2, D2, og2, od2, real2, z2 = _setup(False)
    before = _params(G2, D2)
    stats = gan_step(G2, D2, og2, od2, real2, z2, _targets())
    assert stats.shape == (5,) and not stats.requires_grad
    assert stats[0].item() == pytest.approx(ref[0], rel=1e-6) and stats[1].item() == pytest.approx(ref[1], rel=1e-6)
    assert torch.allclose(_params(G2, D2), after_ref, atol=1e-7)
    assert not torch.equal(_params(G2, D2), before)  # both nets moved
    assert all(p.requires_grad for p in D2.parameters())  # unfrozen again after the G step
    # D's gradients are the D step's (the G step added none): they equal a pure D-loss backward
    G3, D3, _, _, real3, z3 = _setup(False)
    fake = G3(z3).detach()
    F_d = F.binary_cross_entropy_with_logits(D3(real3), torch.ones(B)) + F.binary_cross_entropy_with_logits(D3(fake), torch.zeros(B))
    F_d.backward()
    for p2, p3 in zip(D2.parameters(), D3.parameters()):
        assert torch.allclose(p2.grad, p3.grad, atol=1e-6)


def test_fast_path_losses_match_fp32():
    """channels_last (the default) ≈ exact; bf16 autocast within bf16 rounding of the fp32 losses."""
    G, D, og, od, real, z = _setup(False)
    fp32 = [gan_step(G, D, og, od, real, z, _targets()) for _ in range(3)]
    G, D, og, od, real, z = _setup(True)
    cl = [gan_step(G, D, og, od, real, z, _targets()) for _ in range(3)]
    G, D, og, od, real, z = _setup(True)
    bf16 = [gan_step(G, D, og, od, real, z, _targets(), torch.autocast("cpu", torch.bfloat16)) for _ in range(3)]
    for a, b, c in zip(fp32, cl, bf16):
        assert torch.isfinite(c).all()
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        assert torch.allclose(a, c, rtol=3e-2, atol=1e-2)
    assert not torch.equal(fp32[0], bf16[0])  # autocast really ran in bf16


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path, tiny_cfg, monkeypatch):
    """``--compile`` wraps G and D in torch.compile around the very parameters the optimisers and
    checkpoints hold. Compiled here by dynamo + AOTAutograd with eager kernels (``aot_eager``): graph
    capture, functionalised BatchNorm buffers and the shared parameters are what this code can get
    wrong; inductor's C++ kernels (≈40 s to build cold, on every fresh CI machine) are torch's to test."""
    kw = dict(max_images=16 * 4, ckpt_every=100, sample_every=100, recipe="b16-ema", ema_kimg=0.05)
    eager = train(replace(tiny_cfg, out=str(tmp_path / "eager"), **kw), progress=False)
    real_compile = torch.compile
    backends = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: backends.append(1) or real_compile(m, backend="aot_eager", **k))
    compiled = train(replace(tiny_cfg, out=str(tmp_path / "compiled"), compile=True, **kw), progress=False)
    assert backends  # the loop really compiled its nets
    a, b = checkpoint.load(eager.checkpoint)[0], checkpoint.load(compiled.checkpoint)[0]
    nets = [k for k in a if k.startswith(("G.", "D.", "G_ema."))]
    assert nets and any("running_mean" in k for k in nets)
    # Adam moves a weight by up to lr (2e-4) a step however small its gradient, so a reordered sum that
    # flips a near-zero gradient's sign shows as lr-sized differences; a broken compile (stale buffers,
    # parameters not shared) would differ by as much as the training moved the nets
    for k in nets:
        torch.testing.assert_close(b[k], a[k], rtol=1e-2, atol=4 * 2e-4, msg=k)
    torch.manual_seed(tiny_cfg.seed)
    G0, D0 = build(tiny_cfg.model)  # the loop's init
    init = {**{f"G.{k}": v for k, v in G0.state_dict().items()}, **{f"D.{k}": v for k, v in D0.state_dict().items()}}
    weights = [k for k in init if k.endswith("weight") and init[k].ndim > 1]
    moved = float(torch.cat([(a[k] - init[k]).abs().flatten() for k in weights]).mean())
    off = float(torch.cat([(b[k] - a[k]).abs().flatten() for k in weights]).mean())
    assert off < 0.1 * moved, (off, moved)  # on average


def test_memmap_and_resident_batches_are_identical():
    data = open_prepared(resolve_dataset("procedural:100", 16, 3, progress=False))
    assert isinstance(data.images, np.memmap)
    resident = resident_images(data.images, torch.device("cpu"), "on")
    assert isinstance(resident, torch.Tensor) and resident.shape == data.images.shape
    assert resident_images(data.images, torch.device("cpu"), "auto") is data.images  # CPU keeps the map
    a, b = BatchSampler(data.images, 16, seed=3), BatchSampler(resident, 16, seed=3)
    gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for step in range(0, 3 * a.steps_per_epoch + 1):  # crosses epoch boundaries
        xa, xb = a.load(step), b.load(step)
        assert xa.dtype == torch.uint8 and xa.shape == (16, 16, 16, 3)
        assert torch.equal(xa, xb)
        assert torch.equal(to_model_input(xa, True, gen_a, True), to_model_input(xb, True, gen_b, True))
    with pytest.raises(FaceganError, match="resident must be"):
        resident_images(data.images, torch.device("cpu"), "yes")


@pytest.mark.slow
def test_resident_training_gives_identical_weights(tmp_path, tiny_cfg):
    a = train(replace(tiny_cfg, out=str(tmp_path / "map"), resident="off", flip=True), progress=False)
    b = train(replace(tiny_cfg, out=str(tmp_path / "ram"), resident="on", flip=True), progress=False)
    ta, tb = checkpoint.load(a.checkpoint)[0], checkpoint.load(b.checkpoint)[0]
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
