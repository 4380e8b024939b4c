"""The projected discriminator (Sauer et al., NeurIPS 2021): D looks at faces through frozen ImageNet features.

A DCGAN discriminator must learn from scratch what a face is before it can teach G anything;
at CPU budgets that is what learns slowly. Projected GAN lets D start from a frozen pretrained
network instead:

1. the image (DiffAugmented by the loop, as for any D) is resized to ``feat_res`` and fed to
   EfficientNet-Lite0 (models/efficientnet_lite.py), read at strides 4, 8, 16 and 32;
2. cross-channel mixing (CCM): a fixed random 1×1 convolution per scale, to 64/128/256/512
   channels; cross-scale mixing (CSM): from the deepest scale up, add, upsample ×2 (bilinear),
   fixed random 1×1 convolution. Random and fixed, as in the paper: they spread the pretrained
   features so that D cannot focus on a few of them. They are drawn from the run's seed (the
   global stream at build time) and kept as buffers, so a checkpoint holds them;
3. four small discriminators, one per mixed scale, each spectral-normed stride-2 convolutions
   with BatchNorm down to 8×8 (or less) and a 4×4 convolution to a map of logits. D returns all
   their logits, (B, L): the hinge loss is applied to each.

What is trained is only step 3. The feature network is not a registered submodule: it is in no
state dict (so never in a checkpoint, never all-reduced or broadcast by DDP, never optimised);
``_apply`` moves it with the module (device, dtype, channels_last). A checkpoint records the
feature weights' ID (:data:`efficientnet_lite.ID`) and a resume refuses others.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from facegan.models import efficientnet_lite

CCM_CHANNELS = (64, 128, 256, 512)  # Projected GAN's cout = 64, expand = True
FEAT_RES = (64, 96, 128, 160, 192, 224, 256)  # sides fed to the feature net: multiples of 32
END_RES = 8


def _width(res: int) -> int:
    """Channels of a mini-discriminator's layer at side ``res`` (Projected GAN's table)."""
    return 512 if res <= 8 else 256 if res <= 16 else 128 if res <= 32 else 64


class RandomProjection(nn.Module):
    """A fixed 1×1 convolution: PyTorch's default init, drawn once from the global stream, kept as buffers."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        conv = nn.Conv2d(c_in, c_out, 1)
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class MiniD(nn.Sequential):
    """Feature map (B, C, r, r) → logit map: spectral-normed 4×4 stride-2 conv + BN + LeakyReLU while the
    side exceeds END_RES, then a 4×4 (or r×r, when smaller) valid convolution to one channel."""

    def __init__(self, c_in: int, res: int) -> None:
        layers: list[nn.Module] = []
        sn = nn.utils.parametrizations.spectral_norm
        c, r = c_in, res
        while r > END_RES:
            r //= 2
            layers += [sn(nn.Conv2d(c, _width(r), 4, 2, 1, bias=False)), nn.BatchNorm2d(_width(r)),
                       nn.LeakyReLU(0.2, inplace=True)]
            c = _width(r)
        layers.append(sn(nn.Conv2d(c, 1, min(4, r), 1, 0, bias=False)))
        super().__init__(*layers)


class ProjectedDiscriminator(nn.Module):
    """image (B, C, res, res) in [−1, 1] → (B, L) logits of the four mini-discriminators.

    ``pretrained`` False leaves the feature net random (checking a checkpoint's shapes on the meta
    device needs no wheel); a D that trains must have it (:meth:`forward` refuses otherwise).
    """

    def __init__(self, cfg: Any, pretrained: bool = True) -> None:
        super().__init__()
        self.cfg, self.feat_res = cfg, cfg.d_feat_res
        feats = efficientnet_lite.Lite0Features()
        if pretrained:
            feats.load(efficientnet_lite.read_weights())
        object.__setattr__(self, "features", feats)  # not registered: see the module docstring
        self.pretrained = pretrained
        taps = efficientnet_lite.CHANNELS
        self.ccm = nn.ModuleList(RandomProjection(c, o) for c, o in zip(taps, CCM_CHANNELS))
        # CSM, deepest first: each halves the channels it gets, except the shallowest
        outs = [CCM_CHANNELS[0]] + [c // 2 for c in CCM_CHANNELS[1:]]
        self.csm = nn.ModuleList(RandomProjection(c, o) for c, o in zip(CCM_CHANNELS, outs))
        sides = [self.feat_res // 2 ** (k + 1) for k in range(4)]  # after CSM's ×2: S/2, S/4, S/8, S/16
        self.discs = nn.ModuleList(MiniD(c, r) for c, r in zip(outs, sides))

    def _apply(self, fn: Callable, recurse: bool = True) -> "ProjectedDiscriminator":
        self.features._apply(fn, recurse)  # .to(device / dtype / memory_format) moves the frozen net too
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pretrained:
            raise RuntimeError("this ProjectedDiscriminator was built without its pretrained features")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.feat_res:
            x = F.interpolate(x, size=(self.feat_res, self.feat_res), mode="bilinear", align_corners=False)
        mixed = [p(f) for p, f in zip(self.ccm, self.features(x))]
        scales, up = [], None
        for k in range(3, -1, -1):  # deepest first: add the coarser result, upsample, project
            y = mixed[k] if up is None else mixed[k] + up
            up = self.csm[k](F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True))
            scales.append(up)
        scales.reverse()
        return torch.cat([d(s).flatten(1) for d, s in zip(self.discs, scales)], dim=1)
