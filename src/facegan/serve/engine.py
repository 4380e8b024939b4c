"""The served model: a generator behind one ``render(z) → uint8 faces`` call, on torch or ONNX Runtime.

Whatever the source (a run folder, a checkpoint file, a model folder), the service sees the same
thing: the architecture, what the model card says, the sha256 of the generator's weights, and a
render function. The sha256 is of the weights alone (fp32 tensors, safetensors layout, no
metadata), so a run and the model folder exported from it name the same model.

Both runtimes compute each face from its latent alone: G runs in eval mode (BatchNorm running
statistics), so a face's bytes do not depend on the batch the micro-batcher put it in
(``tests/test_serve.py`` checks it at n = 1 against inside n = 64).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facegan import export, saved
from facegan.errors import FaceganError
from facegan.models.dcgan import Generator, to_uint8
from facegan.models.srresnet import SRGenerator
from facegan.onnx_export import cpu_session
from facegan.sample import render
from facegan.saved import weights_sha256

RUNTIMES = ("torch", "onnx")


@dataclass
class Model:
    """A loaded generator (and optional upscaler) with what the service says about it."""

    G: Generator
    render: Callable[[torch.Tensor], np.ndarray]  # latents (n, z_dim) → uint8 (n, res, res, C)
    runtime: str
    sha256: str
    info: dict[str, Any]  # config.json of a model folder, or the same fields for a run
    card: str  # the model card (README.md) in Markdown
    upscaler: SRGenerator | None = None
    _cleanup: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for f in self._cleanup:
            f()
        self._cleanup.clear()


def load_model(source: str | Path, upscaler: str | Path | None = None, runtime: str = "torch",
               device: str | torch.device = "cpu") -> Model:
    """The model to serve from a run folder, checkpoint or model folder; ``upscaler`` a train-sr run,
    checkpoint or model folder (a model folder that ships one uses it unless another is given)."""
    if runtime not in RUNTIMES:
        raise FaceganError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    model = saved.open(source)
    G = model.generator(device)
    SR = saved.load_upscaler(upscaler, device) if upscaler is not None else model.bundled_upscaler(device)
    if SR is not None and SR.cfg.channels != G.cfg.channels:
        raise FaceganError(f"the upscaler takes {SR.cfg.channels}-channel images, this generator makes {G.cfg.channels}-channel ones")
    if model.is_model_folder:
        info = model.info
        card_file = Path(source) / saved.CARD
        card = card_file.read_text(encoding="utf-8", errors="replace") if card_file.is_file() else ""
    else:
        info = export.describe(model, G, SR)
        card = export.model_card(info, onnx=False)
    info = {**info, "upscaler": SR.cfg.to_dict() if SR is not None else None}
    model = Model(G=G, render=lambda z: render(G, z, len(z)), runtime="torch", sha256=weights_sha256(G), info=info,
                  card=card, upscaler=SR)
    if runtime == "onnx":
        _use_onnx(model, source)
    return model


def _use_onnx(model: Model, source: str | Path) -> None:
    """Render through ONNX Runtime: the model folder's model.onnx, or one exported now to a temporary folder."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise FaceganError("--runtime onnx needs: pip install 'facegan[onnx]' (onnxruntime and onnxscript)") from None
    path = Path(source) / saved.ONNX if saved.is_model_folder(source) else None
    if path is None or not path.is_file():
        tmp = Path(tempfile.mkdtemp(prefix="facegan-serve-"))
        model._cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        path = tmp / saved.ONNX
        export.export_onnx(model.G, path)
    try:  # idle ORT threads sleep: the service encodes images on the same cores between passes
        session = cpu_session(path, spinning=False)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for a bad file
        raise FaceganError(f"{path} is not a model ONNX Runtime can load ({type(e).__name__}: {str(e)[:200]})") from None
    name = session.get_inputs()[0].name

    def run(z: torch.Tensor) -> np.ndarray:
        return to_uint8(torch.from_numpy(session.run(None, {name: z.float().numpy()})[0]))

    model.render, model.runtime = run, "onnx"

