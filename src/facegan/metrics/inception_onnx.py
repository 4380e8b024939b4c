"""ONNX Runtime as the CPU backend of the FID Inception (optional: ``pip install 'facegan[onnx]'``).

On a 2-core AVX2 CPU, ONNX Runtime's convolutions (MLAS, in its blocked NCHWc layout with the
ReLUs fused in) run the rebuilt Inception 7–20 % faster than oneDNN through PyTorch
(docs/benchmarks.md), the last step to the CPU's FMA ceiling. The network is the same module
(:mod:`facegan.metrics.inception_net`), exported once with ``torch.onnx.export`` (the
``torch.export``-based exporter, which needs onnxscript) and cached under a hash of its weights, so
the ONNX file always matches the folded weights it was made from; loading an ONNX graph runs no
Python code.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from facegan.data.prepare import default_cache_dir
from facegan.errors import FaceganError
from facegan.metrics.inception_net import InceptionV3
from facegan.onnx_export import cpu_session, save_onnx

MISSING = "the onnxruntime Inception backend needs: pip install 'facegan[onnx]' (onnxruntime and onnxscript)"


def available() -> bool:
    """Whether onnxruntime (to run) and onnxscript (to export, once) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))


def model_path(net: InceptionV3, cache_dir: str | Path | None = None) -> Path:
    """The cached ONNX file of ``net``: exported on first use, keyed by its exact weights."""
    digest = hashlib.sha256()
    for name, t in net.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    path = Path(cache_dir or default_cache_dir()) / f"inception-{digest.hexdigest()[:24]}.onnx"
    if not path.is_file():
        _export(net, path)
    return path


def _export(net: InceptionV3, path: Path) -> None:
    cpu = copy.deepcopy(net).to("cpu", memory_format=torch.contiguous_format)  # the exporter traces a CPU copy
    save_onnx(cpu, torch.zeros(2, 3, 299, 299), path, "x", "features")


class OnnxInception:
    """Callable like the module: (B, 3, 299, 299) float tensor → (B, 2048) float32 tensor on the CPU."""

    def __init__(self, net: InceptionV3, cache_dir: str | Path | None = None) -> None:
        if not available():
            raise FaceganError(MISSING)
        self.session = cpu_session(model_path(net, cache_dir))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.session.run(None, {"x": np.ascontiguousarray(x.cpu().numpy())})
        return torch.from_numpy(features)
