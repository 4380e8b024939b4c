"""Face super-resolution nets: an SRResNet-family generator (×2/×4) and a strided-conv critic.

Generator (Ledig et al. 2017, trimmed for CPUs the way EDSR trimmed it): a 3×3 head, ``blocks``
residual blocks (conv–PReLU–conv, no BatchNorm: BN statistics of small crops shift between
training and inference and cost PSNR), a long skip, then one sub-pixel step per factor of two
(3×3 conv to 4× the channels, PixelShuffle(2), PReLU) and a 3×3 conv to the image.

Two choices that matter on a small budget:
- the net predicts the *residual over bicubic upscaling* (as VDSR and many fast SR nets do):
  at initialisation it already equals bicubic, so every training step improves on the baseline
  it is compared with, instead of first spending thousands of steps learning to copy colours;
- sub-pixel convolutions start from ICNR initialisation (Aitken et al. 2017): each of the four
  sub-pixel outputs starts with the same kernel, so the untrained net has no checkerboard.

The discriminator mirrors SRGAN's (3×3 convs, stride 2 every other layer, 64→512 maps, LeakyReLU)
with spectral norm instead of BatchNorm, which keeps it stable at the small batches CPUs afford,
and global average pooling instead of SRGAN's 1024-wide dense layer, so it accepts any size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from facegan import checks
from facegan.checks import option
from facegan.data.loader import to_model_input
from facegan.models.dcgan import to_uint8

SCALES = (2, 4)


@dataclass(frozen=True)
class SRConfig:
    """Architecture of an upscaler: ``scale`` 2 or 4, image ``channels``, G's ``width`` feature maps and
    ``blocks`` residual blocks, and the adversarial critic's first-layer width ``d_width``."""

    scale: int = option(4, "Upscaling factor: 2 or 4.")
    channels: int = 3
    width: int = option(32, "Feature maps of the upscaler.")
    blocks: int = option(8, "Residual blocks of the upscaler.")
    d_width: int = 32

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, not {self.scale}")
        if self.channels not in (1, 3) or not 4 <= self.width <= 4096 or not 1 <= self.blocks <= 1024 or not 4 <= self.d_width <= 4096:
            raise ValueError(f"invalid SRConfig {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SRConfig":
        """From JSON (a saved run): types and ranges checked, a one-line FaceganError otherwise."""
        return checks.from_dict(cls, d, "upscaler config")


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width),
                                  nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _icnr_(conv: nn.Conv2d, factor: int = 2) -> None:
    """Give all factor² sub-pixel outputs of each channel the same kernel (no checkerboard at init)."""
    out_c, in_c, k, _ = conv.weight.shape
    base = torch.empty(out_c // factor**2, in_c, k, k)
    nn.init.kaiming_normal_(base, nonlinearity="relu")
    with torch.no_grad():
        conv.weight.copy_(base.repeat_interleave(factor**2, dim=0))
        conv.bias.zero_()


class SRGenerator(nn.Module):
    """Low-resolution image in [−1, 1] (B, C, h, w) → (B, C, h·scale, w·scale) in [−1, 1]."""

    def __init__(self, cfg: SRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.head = nn.Sequential(nn.Conv2d(cfg.channels, w, 3, padding=1), nn.PReLU(w))
        self.body = nn.Sequential(*[ResBlock(w) for _ in range(cfg.blocks)], nn.Conv2d(w, w, 3, padding=1))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(cfg.scale))):
            conv = nn.Conv2d(w, 4 * w, 3, padding=1)
            _icnr_(conv)
            ups += [conv, nn.PixelShuffle(2), nn.PReLU(w)]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(w, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as exactly bicubic: see the module docstring
        nn.init.zeros_(self.tail.bias)

    @property
    def reach(self) -> int:
        """Input pixels on each side an output pixel depends on (an upper bound): 2·blocks + 2 convolutions
        at the input's size, at most one input pixel for the upsampling and tail convolutions, and the
        bicubic base's radius of 2. Tiles with this much margin upscale like the whole image."""
        return 2 * self.cfg.blocks + 2 + 2 + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = bicubic(x, self.cfg.scale)
        h = self.head(x)
        return base + self.tail(self.up(h + self.body(h)))

    @torch.no_grad()
    def upscale(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, h, w, C) → uint8 (N, h·scale, w·scale, C), batched, on this net's device."""
        device = next(self.parameters()).device
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.require(images[s : s + batch_size], requirements=("C", "W"))).to(device)  # copies only a read-only view
            out.append(to_uint8(self(to_model_input(x))))
        return np.concatenate(out) if out else np.zeros((0, 0, 0, self.cfg.channels), np.uint8)


class SRDiscriminator(nn.Module):
    """SRGAN's strided-conv critic with spectral norm; one raw score per image."""

    def __init__(self, channels: int = 3, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i, c in enumerate((width, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width)):
            layers += [spectral_norm(nn.Conv2d(c_in, c, 3, stride=1 + i % 2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(c_in, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3))).flatten()


def build_sr(cfg: SRConfig) -> tuple[SRGenerator, SRDiscriminator]:
    """Freshly initialised (upscaler, critic) for a config."""
    return SRGenerator(cfg), SRDiscriminator(cfg.channels, cfg.d_width)


def bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upscaling by ``scale`` (the baseline every SR number here is compared with)."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downscaling by ``scale``: how low-resolution inputs are made from photos."""
    return F.interpolate(x, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=True)

