"""Each stabiliser changes exactly what it claims to, trains with finite losses, and resumes exactly."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from facegan import checkpoint, config, load_generator
from facegan.errors import FaceganError
from facegan.models.dcgan import Discriminator, Generator, MinibatchStd, ModelConfig, build
from facegan.train import augment, ema, loss
from facegan.train.loop import Stabilisers, gan_step, train
from facegan.viz import read_metrics

NET = ModelConfig(res=16, z_dim=8, g_width=8, d_width=8, width_cap=32)


# ---- losses ------------------------------------------------------------------------------------
def test_hinge_and_least_squares_values():
    r, f = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    ones, zeros = torch.ones(2), torch.zeros(2)
    assert loss.d_loss(r, f, ones, zeros, "hinge").item() == pytest.approx(0.5 + 0.5)
    assert loss.g_loss(f, "hinge").item() == pytest.approx(1.0)
    assert loss.d_loss(r, f, ones, zeros, "ls").item() == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)
    assert loss.g_loss(f, "ls").item() == pytest.approx(0.5 * (9 + 1) / 2)
    bce = loss.d_loss(r, f, ones, zeros, "bce").item()
    assert bce == pytest.approx(2 * (torch.nn.functional.softplus(torch.tensor(-2.0)) + torch.log(torch.tensor(2.0))).item() / 2)
    with pytest.raises(ValueError, match="unknown loss"):
        loss.g_loss(f, "wgan")


def test_r1_penalty_is_squared_input_gradient():
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)  # a linear D: ∇ₓ D = w for every image
    assert loss.r1_penalty(logits, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


# ---- DiffAugment -------------------------------------------------------------------------------
def test_diff_augment_is_seeded_differentiable_and_does_what_it_says():
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    pol = augment.parse_policy("color,translation,cutout")
    a, b = augment.diff_augment(x, pol, g1), augment.diff_augment(x, pol, g2)
    assert a.shape == x.shape and torch.equal(a, b)  # same generator state → same augmentation

    ones = torch.ones(64, 3, 32, 32)
    cut = augment.cutout(ones, torch.Generator().manual_seed(0))
    zero_frac = (cut == 0).float().mean().item()
    assert 0.10 < zero_frac <= 0.25  # a 16×16 square of 32×32, clipped at the borders
    assert set(cut.unique().tolist()) == {0.0, 1.0}

    moved = augment.translation(ones, torch.Generator().manual_seed(0))
    zeros_per_image = (moved == 0).flatten(1).sum(1)
    assert (zeros_per_image > 0).float().mean() > 0.8  # almost every image shifted, zero-filled
    assert moved.max() == 1 and (zeros_per_image <= 3 * (32 * 32 - 28 * 28)).all()  # shifts ≤ 4 px
    # a pure shift: with no zero border involved, translation is a permutation of pixel values
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(augment.translation(img, torch.Generator().manual_seed(1), ratio=0.0), img)

    col = augment.color(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(col.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))

    xg = x.clone().requires_grad_(True)
    augment.diff_augment(xg, pol, torch.Generator().manual_seed(0)).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.parse_policy("color,rotate")
    assert augment.parse_policy("") == ()


# ---- architecture options ----------------------------------------------------------------------
def test_spectral_norm_bounds_every_d_weight():
    D = Discriminator(replace(NET, d_norm="spectral"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    x = torch.randn(8, 3, 16, 16)
    for _ in range(30):  # power iteration converges while training
        D(x)
    convs = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(convs) == NET.n_up + 1
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)
        assert torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1), 2) < 0.9  # raw N(0, .02)


def test_resize_conv_generator_has_no_transposed_upsampling():
    G = Generator(replace(NET, g_up="resize"))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in G.body.modules())
    assert sum(isinstance(m, nn.Upsample) for m in G.body.modules()) == NET.n_up
    assert G(torch.randn(4, 8)).shape == (4, 3, 16, 16)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in Generator(NET).body.modules()) == NET.n_up


def test_minibatch_std_sees_the_batch():
    layer = MinibatchStd(group=4)
    same = torch.randn(1, 5, 4, 4).repeat(8, 1, 1, 1)
    out = layer(same)
    assert out.shape == (8, 6, 4, 4) and out[:, 5].abs().max() < 1e-3  # identical images → std ≈ 0
    assert layer(torch.randn(8, 5, 4, 4))[:, 5].mean() > 0.5
    D = Discriminator(replace(NET, d_mbstd=True)).eval()
    x = torch.randn(4, 3, 16, 16)
    y = x.clone()
    y[1:] = torch.randn(3, 3, 16, 16)
    assert D(x)[0] != D(y)[0]  # image 0's score depends on the rest of its group


# ---- EMA -----------------------------------------------------------------------------------------
def test_ema_update_and_bn_recalibration():
    torch.manual_seed(0)
    G = Generator(NET)
    G_ema = ema.make(G)
    assert all(not p.requires_grad for p in G_ema.parameters())
    old = [p.clone() for p in G_ema.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(G_ema, G, 0.9)
    for o, e, g in zip(old, G_ema.parameters(), G.parameters()):
        assert torch.allclose(e, 0.9 * o + 0.1 * g, atol=1e-6)
    assert ema.decay_at(0, 0.999) == pytest.approx(0.1) and ema.decay_at(10**6, 0.999) == 0.999

    # the half-life form: a half-life of kimg thousand images, at most rampup × the images seen
    per_step = 32
    assert ema.half_life_decay(10**7, per_step, 10.0, 0.05) ** (10_000 / per_step) == pytest.approx(0.5)
    assert ema.half_life_decay(20_000, per_step, 10.0, 0.05) ** (1_000 / per_step) == pytest.approx(0.5)  # ramped
    assert ema.half_life_decay(20_000, per_step, 10.0, 0.0) == ema.half_life_decay(10**7, per_step, 10.0, 0.05)
    assert ema.half_life_decay(0, per_step, 10.0, 0.05) < 1e-6  # the first step copies G

    ema.recalibrate_bn(G_ema, seed=3, n=96, batch=32)
    bn = G_ema.body[0]
    from facegan.models.dcgan import latents

    with torch.no_grad():
        h = G_ema.entry(latents(96, 8, 3)[:, :, None, None])
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)  # exact average, not momentum
    assert bn.momentum == 0.1 and not G_ema.training


# ---- the trainer ----------------------------------------------------------------------------------
def _step_losses(opts, seed=0):
    torch.manual_seed(seed)
    G, D = build(replace(NET, d_norm="none"))
    og, od = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    g = torch.Generator().manual_seed(1)
    real, z = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1, torch.randn(8, 8, generator=g)
    stats = gan_step(G, D, og, od, real, z, (torch.ones(8), torch.zeros(8)), None, opts, torch.Generator().manual_seed(2))
    return stats, torch.cat([p.grad.flatten() for p in D.parameters()])


def test_gan_step_options_change_the_computation():
    base, d_grad = _step_losses(Stabilisers())
    assert base.shape == (5,) and base[4] == 0
    assert not torch.allclose(_step_losses(Stabilisers(loss="hinge"))[0][:2], base[:2])
    assert not torch.allclose(_step_losses(Stabilisers(loss="ls"))[0][:2], base[:2])
    assert not torch.allclose(_step_losses(Stabilisers(augment=("translation", "cutout")))[0][:2], base[:2])
    r1, r1_grad = _step_losses(Stabilisers(r1_weight=5.0))
    assert r1[4] > 0 and torch.allclose(r1[0], base[0])  # penalty reported apart; D's loss term itself unchanged
    assert not torch.allclose(r1_grad, d_grad)  # …but D's gradient includes it
    again, again_grad = _step_losses(Stabilisers())
    assert torch.equal(again, base) and torch.equal(again_grad, d_grad)  # deterministic


@pytest.mark.slow  # ten short runs: CI runs them, the inner loop stays under a minute
@pytest.mark.parametrize("options", [
    dict(loss="hinge"), dict(loss="ls", label_smoothing=0.1), dict(ema=0.99), dict(ema_kimg=0.5),
    dict(augment="color,translation,cutout"),
    dict(r1=1.0, r1_every=2), dict(d_norm="spectral"), dict(g_up="resize"), dict(d_mbstd=True),
    dict(lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9),
])
def test_each_option_trains_with_finite_losses(tiny_cfg, options):
    model = {k: v for k, v in options.items() if k in ("d_norm", "g_up", "d_mbstd")}
    train_opts = {k: v for k, v in options.items() if k not in model}
    cfg = replace(tiny_cfg, model=replace(tiny_cfg.model, **model), **train_opts)
    res = train(cfg, progress=False)
    recs = [r for r in read_metrics(res.run / "metrics.jsonl") if "loss_D" in r]
    assert recs and all(torch.isfinite(torch.tensor([r["loss_D"], r["loss_G"]])).all() for r in recs)
    tensors, meta = checkpoint.load(res.checkpoint)
    assert meta["config"]["model"] == replace(tiny_cfg.model, **model).to_dict()
    if "r1" in options:
        assert all(r["r1"] > 0 for r in recs)
    if "lr_d" in options:
        assert meta["optD"][0]["lr"] == 4e-4 and meta["optG"][0]["lr"] == 1e-4 and meta["optD"][0]["betas"] == [0.0, 0.9]
    if "ema" in options or "ema_kimg" in options:
        ema_keys = [k for k in tensors if k.startswith("G_ema.")]
        assert len(ema_keys) == len([k for k in tensors if k.startswith("G.")])
        assert not torch.equal(tensors["G_ema.entry.weight"], tensors["G.entry.weight"])
        z = torch.randn(4, 8)
        assert not torch.equal(load_generator(res.run)(z), load_generator(res.run, ema=False)(z))


@pytest.mark.slow
def test_stabiliser_options_resume_bit_identically(tmp_path, tiny_cfg):
    cfg = replace(tiny_cfg, loss="hinge", ema_kimg=0.05, augment="color,translation,cutout", r1=0.5, r1_every=3, flip=True,
                  model=replace(tiny_cfg.model, d_norm="spectral", d_mbstd=True))
    full = train(replace(cfg, out=str(tmp_path / "full")), progress=False)
    half = train(replace(cfg, out=str(tmp_path / "half"), max_images=cfg.max_images // 2), progress=False)
    rest = train(replace(cfg, out=str(half.run)), resume=True, progress=False)
    a, b = checkpoint.load(full.checkpoint)[0], checkpoint.load(rest.checkpoint)[0]
    assert rest.steps == full.steps and a.keys() == b.keys() and any(k.startswith("G_ema.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng."))


def test_bad_stabiliser_options_are_one_line_errors(tiny_cfg):
    for bad, msg in [(dict(loss="wgan"), "--loss"), (dict(loss="hinge", label_noise=0.1), "hinge"),
                     (dict(augment="color,zoom"), "--augment"), (dict(ema=1.5), "--ema"),
                     (dict(ema=0.99, ema_kimg=10.0), "not both"), (dict(ema_kimg=-1.0), "--ema-kimg")]:
        with pytest.raises(FaceganError, match=msg):
            train(replace(tiny_cfg, **bad), progress=False)


# ---- recipes and presets -------------------------------------------------------------------------
def test_recipes_and_presets():
    classic = config.resolve("faces64", recipe="classic")
    dcgan = config.resolve("dcgan64")
    assert replace(classic, preset="dcgan64", epochs=dcgan.epochs) == dcgan  # the seed project exactly, batch 128 too
    assert dcgan.batch == 128 and dcgan.ema == 0 and dcgan.ema_kimg == 0 and not dcgan.flip
    faces = config.resolve("faces64")
    assert faces.recipe == config.DEFAULT_RECIPE == "b16-ema" and faces.model == dcgan.model
    assert (faces.batch, faces.ema_kimg, faces.ema_rampup, faces.flip, faces.ema) == (16, 10.0, 0.05, False, 0.0)
    assert replace(faces, preset="dcgan64", recipe="classic", batch=128, ema_kimg=0.0,
                   epochs=dcgan.epochs) == dcgan  # the recipe is exactly what its name lists
    assert config.resolve("dcgan64", recipe="b16-ema").batch == 16
    assert config.resolve("faces128").model.res == 128 and config.resolve("faces128").recipe == "b16-ema"
    assert config.resolve("faces64", loss="ls").loss == "ls"  # explicit flags beat the recipe
    assert config.resolve("faces64", batch=64).batch == 64
    per_step = config.resolve("faces64", ema=0.999)  # an explicit EMA of the other form replaces the recipe's
    assert (per_step.ema, per_step.ema_kimg) == (0.999, 0.0)
    with pytest.raises(FaceganError, match="unknown recipe"):
        config.resolve("faces64", recipe="modern")
    with pytest.raises(FaceganError, match="unknown recipe"):
        config.resolve("faces64", recipe="fancy")
    with pytest.raises(FaceganError, match="d_norm"):
        config.resolve("dcgan64", d_norm="layer")
