import numpy as np
import pytest
import torch

from facegan.config import PRESETS, resolve
from facegan.errors import FaceganError
from facegan.models.dcgan import ModelConfig, build, latents, n_params, to_uint8

# (G, D) parameter counts. dcgan64 equals the PyTorch DCGAN tutorial's printed nets exactly.
EXPECTED_PARAMS = {
    "quick": (296_896, 167_808),
    "dcgan64": (3_576_704, 2_765_568),
    "faces64": (3_576_704, 2_765_568),  # dcgan64's nets (the recipe differs, not the architecture)
    "celeba128": (12_786_560, 11_164_416),
    "faces128": (12_786_560, 11_164_416),
    "faces128-z32": (1_642_400, 198_529),
    "faces256": (6_072_720, 2_821_505),
    "fashion28": (907_392, 138_561),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_shapes_ranges_and_param_counts(name):
    cfg = resolve(name).model
    torch.manual_seed(0)
    G, D = build(cfg)
    assert (n_params(G), n_params(D)) == EXPECTED_PARAMS[name]
    z = torch.randn(2, cfg.z_dim)
    x = G(z)
    assert x.shape == (2, cfg.channels, cfg.res, cfg.res)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    logits = D(x)
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_preset_architectures_match_their_projects():
    g = build(PRESETS["faces128-z32"].model)[0]
    kinds = [type(m).__name__ for m in g.modules()]
    assert kinds.count("ConvTranspose2d") == 4 and kinds.count("Conv2d") == 3 and kinds.count("Linear") == 1
    assert g.entry.out_features == 16 * 16 * 128
    g256, d256 = build(PRESETS["faces256"].model)
    assert g256.entry.out_features == 8 * 8 * 512
    assert [m.out_channels for m in g256.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == [256, 128, 64, 32, 16]
    assert any(isinstance(m, torch.nn.Dropout) for m in d256.modules())
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in build(PRESETS["fashion28"].model)[0].modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in build(PRESETS["fashion28"].model)[1].modules())


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    G, _ = build(PRESETS["dcgan64"].model)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3


@pytest.mark.parametrize("bad", [dict(res=48), dict(channels=2), dict(res=16, entry_res=16)])
def test_invalid_model_config_rejected(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_unknown_preset_is_a_user_error():
    with pytest.raises(FaceganError, match="unknown preset"):
        resolve("dcgan65")


def test_explicit_budget_replaces_preset_budget():
    assert resolve("dcgan64").epochs == 5
    cfg = resolve("dcgan64", max_images=1000)
    assert cfg.max_images == 1000 and cfg.epochs is None
    assert resolve("dcgan64", d_dropout=0.3).model.d_dropout == 0.3


def test_latents_depend_only_on_seed_and_index():
    a = latents(10, 5, seed=3)
    assert torch.equal(latents(4, 5, seed=3, start=6), a[6:])
    assert not torch.equal(latents(10, 5, seed=4), a)


def test_sample_is_uint8_and_independent_of_batching():
    torch.manual_seed(0)
    G, _ = build(ModelConfig(res=16, z_dim=8, g_width=8, d_width=8, width_cap=32))
    G.train()
    a = G.sample(6, seed=1, batch_size=6)
    b = G.sample(6, seed=1, batch_size=4)
    assert a.dtype.name == "uint8" and a.shape == (6, 16, 16, 3)
    # eval-mode BN: a face does not depend on its batch-mates (±1 allows kernel rounding)
    assert abs(a.astype(int) - b).max() <= 1
    assert abs(G.sample(1, seed=1, start=5).astype(int) - a[5:6]).max() <= 1
    assert G.training  # mode restored


def test_to_uint8_rounds_every_value_as_the_plain_formula():
    """The in-place conversion must give exactly ((clamp(x) + 1) · 127.5).round(): faces are compared bit for bit."""
    x = torch.linspace(-1.1, 1.1, 3 * 65536).reshape(1, 3, 256, 256)
    x.view(-1)[:510] = (torch.arange(510) - 255) / 255  # the values that round at exactly .5
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for layout in (torch.contiguous_format, torch.channels_last):
        assert np.array_equal(to_uint8(x.contiguous(memory_format=layout)), expected)
