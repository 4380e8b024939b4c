"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a torch module.

dlib runs this network on one core without BLAS: 83 ms a face on the machine of
docs/benchmarks.md. In torch (oneDNN, every core) the same descriptors cost a few milliseconds, so
the identity checks of synthetic face sets, test packs and the service, the training set's
descriptors and the ``fd_face`` metric all use this module; it gives dlib's descriptors to 5·10⁻⁷ on real faces
(docs/benchmarks.md; a test compares the two on drawn faces and noise, to 10⁻⁵).

The weights are read from ``face-recognition-models``' file itself, a dlib serialization, by a
reader of its plain parts (length-prefixed integers, strings and little-endian float32 tensors):
nothing is executed, and every tensor's size is checked against the architecture below, which is
dlib's ``dnn_face_recognition_ex.cpp`` network:

- input 150×150 RGB, minus the file's per-channel means, divided by 256;
- conv 32 7×7/2 (no padding), affine, ReLU, max-pool 3×3/2;
- residual blocks of [conv 3×3 (stride s), affine, ReLU, conv 3×3, affine], then ReLU of block +
  input: 3 at 32 maps; at 64, 128, 256 and 256 maps, one down block (stride 2, unpadded; its
  input average-pooled 2×2/2) and then 3, 2, 2 and 0 more plain blocks. dlib adds tensors of
  different shapes by zero-padding both to the larger (channels and rows/columns, from the top-left);
  so does :func:`_add`;
- the mean over positions, then a 256→128 linear map without bias: the descriptor.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegan.errors import FaceganError

SIDE = 150
WIDTHS = (32, 64, 128, 256, 256)  # maps per level
BLOCKS = (3, 4, 3, 3, 1)  # blocks per level; every level after the first starts with a down block
N_CONV = 1 + 2 * sum(BLOCKS)  # 29


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: both zero-padded to the larger channels, rows and columns, then summed."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]
    out = a.new_zeros(shape)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] += a
    out[:, :b.shape[1], :b.shape[2], :b.shape[3]] += b
    return out


class FaceResNet(nn.Module):
    """uint8-range RGB chips (N, 3, 150, 150), as float, → (N, 128) descriptors. Affines are folded into the convs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, WIDTHS[0], 7, 2)
        self.convs = nn.ModuleList()
        self.down: list[bool] = []
        c_in = WIDTHS[0]
        for level, (width, blocks) in enumerate(zip(WIDTHS, BLOCKS)):
            for b in range(blocks):
                down = level > 0 and b == 0
                self.convs.append(nn.Conv2d(c_in, width, 3, 2 if down else 1, 0 if down else 1))
                self.convs.append(nn.Conv2d(width, width, 3, 1, 1))
                self.down.append(down)
                c_in = width
        self.fc = nn.Linear(WIDTHS[-1], 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        for k, down in enumerate(self.down):
            y = self.convs[2 * k + 1](F.relu(self.convs[2 * k](x)))
            x = F.relu(_add(y, F.avg_pool2d(x, 2, 2) if down else x))
        return self.fc(x.mean((2, 3)))


class _Reader:
    """dlib's serialization primitives over the file's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def int_at(self, pos: int) -> tuple[int, int]:
        """(value, next position) of a packed integer: a control byte (size in the low bits, sign in
        the top bit), then that many little-endian bytes."""
        ctrl = self.data[pos]
        size = ctrl & 0x0F
        if size == 0 or size > 8:
            raise ValueError(f"not a packed integer at byte {pos}")
        value = int.from_bytes(self.data[pos + 1:pos + 1 + size], "little")
        return (-value if ctrl & 0x80 else value), pos + 1 + size

    def float_at(self, pos: int) -> tuple[float, int]:
        """dlib's portable float: mantissa and exponent, two packed integers."""
        m, pos = self.int_at(pos)
        e, pos = self.int_at(pos)
        return m * 2.0 ** e, pos

    def tensor_at(self, pos: int, count: int) -> np.ndarray | None:
        """The float32 values of a serialized tensor (version 2, four sizes, raw floats) starting at
        ``pos`` if it holds ``count`` of them, else None."""
        try:
            version, p = self.int_at(pos)
            dims = []
            for _ in range(4):
                d, p = self.int_at(p)
                dims.append(d)
        except (ValueError, IndexError):
            return None
        if version != 2 or int(np.prod(dims)) != count or p + 4 * count > len(self.data):
            return None
        return np.frombuffer(self.data, "<f4", count, p).copy()

    def tensor_after(self, pos: int, count: int, within: int = 64) -> np.ndarray:
        for p in range(pos, pos + within):
            found = self.tensor_at(p, count)
            if found is not None:
                return found
        raise ValueError(f"no tensor of {count} values within {within} bytes after byte {pos}")


def load(path: str | Path) -> FaceResNet:
    """The network with the weights of dlib's model file at ``path``, in eval mode, frozen."""
    data = Path(path).read_bytes()
    r = _Reader(data)
    net = FaceResNet()
    layers = [(m.group(1).decode(), m.end()) for m in re.finditer(rb"[\x01-\x08][\x00-\xff]?(input_rgb_image_sized|con_\d|affine_|fc_\d)", data)]
    names = [n for n, _ in layers]
    convs = [e for n, e in layers if n.startswith("con_")]
    affines = [e for n, e in layers if n == "affine_"]
    if names.count("input_rgb_image_sized") != 1 or len(convs) != N_CONV or len(affines) != N_CONV or \
            sum(n.startswith("fc_") for n in names) != 1:
        raise FaceganError(f"{path} is not dlib's face-recognition ResNet v1 (its layers: {len(convs)} convolutions, "
                           f"{len(affines)} affines); reinstall face-recognition-models")
    try:
        pos = dict(layers)["input_rgb_image_sized"]
        mean = []
        for _ in range(3):
            v, pos = r.float_at(pos)
            mean.append(v)
        targets = [net.stem] + list(net.convs)
        with torch.no_grad():
            net.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
            for conv, c_at, a_at in zip(targets, convs, affines):
                w = conv.weight
                params = r.tensor_after(c_at, w.numel() + w.shape[0])
                affine = r.tensor_after(a_at, 2 * w.shape[0])
                gamma, beta = torch.from_numpy(affine[:w.shape[0]]), torch.from_numpy(affine[w.shape[0]:])
                conv.weight.copy_(torch.from_numpy(params[:w.numel()]).view_as(w) * gamma.view(-1, 1, 1, 1))
                conv.bias.copy_(torch.from_numpy(params[w.numel():]) * gamma + beta)
            fc_at = dict(layers)[next(n for n in names if n.startswith("fc_"))]
            net.fc.weight.copy_(torch.from_numpy(r.tensor_after(fc_at, 256 * 128)).view(256, 128).T)
    except (ValueError, IndexError, OverflowError) as e:
        raise FaceganError(f"{path} could not be read as dlib's face-recognition ResNet ({e}); reinstall face-recognition-models") from None
    if not all(torch.isfinite(t).all() for t in [*net.parameters(), *net.buffers()]):
        raise FaceganError(f"{path} holds non-finite weights; reinstall face-recognition-models")
    return net.eval().requires_grad_(False)
