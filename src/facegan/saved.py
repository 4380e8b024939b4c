"""One notion of a saved model: ``open(path)`` for a run folder, a checkpoint file or a model folder.

Every command that uses a trained model (generate, interpolate, upscale, serve, project, export,
report, anonymize) starts here, so each question about a saved model has one answer: what kind
it is (a face generator or an upscaler), where its outputs go by default (``home``: the run
folder, or the model folder itself), what it was trained on, and which generator users see (the
EMA one when the run kept it). Everything is read from JSON and safetensors, checked against
the architecture it claims before any weight is used: opening a model never executes code.

A model folder is what ``facegan export RUN --out DIR`` writes (its layout: facegan.export).

This module reads models; it imports nothing from training (a test enforces the import flow).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from facegan import checkpoint
from facegan.config import SRTrainConfig, TrainConfig
from facegan.errors import FaceganError
from facegan.fileio import read_json
from facegan.models.dcgan import Generator, ModelConfig
from facegan.models.srresnet import SRConfig, SRGenerator

GAN, UPSCALER = "gan", "upscaler"  # what a saved model makes: faces from latents, or bigger images
FORMAT = "facegan-model-1"
CONFIG, WEIGHTS, UPSCALER_WEIGHTS, ONNX, CARD, SAMPLES = ("config.json", "model.safetensors", "upscaler.safetensors",
                                                          "model.onnx", "README.md", "samples.png")


def weights_sha256(net: torch.nn.Module) -> str:
    """sha256 of a net's fp32 weights in safetensors layout with no metadata: the model's identity, the
    same for a run, its checkpoint and the model folder exported from it (the service and the
    synthetic face sets name models by it)."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    return hashlib.sha256(safetensors_bytes(state)).hexdigest()


def is_model_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


@dataclass(frozen=True)
class Saved:
    """A saved model, opened: its metadata is read and checked, its weights are read on demand.

    ``checkpoint`` is the file a run or checkpoint path resolved to (None for a model folder);
    ``info`` is that checkpoint's meta, or the model folder's config.json.
    """

    path: Path
    kind: str
    home: Path
    checkpoint: Path | None
    info: dict[str, Any]

    @property
    def is_model_folder(self) -> bool:
        return self.checkpoint is None

    @property
    def config(self) -> TrainConfig | SRTrainConfig:
        """The training config of a run or checkpoint (a model folder keeps only its architecture)."""
        if self.checkpoint is None:
            raise FaceganError(f"{self.path} is a model folder: it keeps its architecture, not its training config")
        return checkpoint.saved_config(self.info.get("kind"), self.info["config"])

    @property
    def data(self) -> str | None:
        """The training data the model names, if any."""
        return self.info.get("data") if self.checkpoint is None else self.info["config"].get("data")

    @property
    def has_ema(self) -> bool:
        """Whether the saved generator users see is the EMA of G (a run that kept one)."""
        if self.checkpoint is None:
            return self.info.get("generator") == "G_ema"
        nets = self.info.get("nets")  # what the checkpoint says it holds (checked against its config); older ones: the config
        return "G_ema" in nets if nets is not None else self.kind == GAN and self.config.has_ema

    def generator(self, device: str | torch.device = "cpu", ema: bool = True) -> Generator:
        """The face generator, in eval mode, in channels_last layout (7–12 % faster at batch 256 on
        the CPU, docs/benchmarks.md). ``ema`` picks the averaged generator of a run that kept one
        (the better faces, what its grids and periodic FID showed); ``ema=False`` the raw G."""
        if self.checkpoint is None:
            G = _build(Generator, _architecture(ModelConfig, self.info.get("architecture"), self.path / CONFIG))
            G.load_state_dict(_read_weights(self.path / WEIGHTS, G))
        else:
            tensors, meta = checkpoint.load(self.checkpoint)  # the whole file checked first: a damaged one says so
            if self.kind != GAN:
                raise FaceganError(f"{self.path} is an upscaler run, not a face generator; use it with facegan upscale or "
                                   "generate --upscale")
            G = _build(Generator, ModelConfig.from_dict(meta["config"]["model"]))
            G.load_state_dict(checkpoint.module_state(tensors, "G_ema" if ema and self.has_ema else "G"))
        return G.to(device, memory_format=torch.channels_last).eval()

    def upscaler(self, device: str | torch.device = "cpu") -> SRGenerator:
        """The upscaler of a train-sr run, or the one a model folder ships (an error if it ships none)."""
        if self.checkpoint is None:
            SR = self.bundled_upscaler(device)
            if SR is None:
                raise FaceganError(f"model folder {self.path} has no upscaler; export it with --upscaler SRRUN")
            return SR
        tensors, meta = checkpoint.load(self.checkpoint)  # the whole file checked first: a damaged one says so
        if self.kind != UPSCALER:
            raise FaceganError(f"{self.path} is a GAN run, not an upscaler; train one with: facegan train-sr DATA --out SRRUN")
        SR = _build(SRGenerator, SRConfig.from_dict(meta["config"]["model"]))
        SR.load_state_dict(checkpoint.module_state(tensors, "SR"))
        return SR.to(device, memory_format=torch.channels_last).eval()

    def bundled_upscaler(self, device: str | torch.device = "cpu") -> SRGenerator | None:
        """The upscaler a model folder ships beside its generator, or None (and None for a run)."""
        if self.checkpoint is not None or not self.info.get("upscaler"):
            return None
        SR = _build(SRGenerator, _architecture(SRConfig, self.info["upscaler"], self.path / CONFIG, "upscaler: "))
        SR.load_state_dict(_read_weights(self.path / UPSCALER_WEIGHTS, SR))
        return SR.to(device, memory_format=torch.channels_last).eval()


def open(path: str | Path) -> Saved:  # noqa: A001 - facegan.saved.open reads as what it does
    """The saved model at ``path``: a model folder, a run folder (its newest checkpoint) or a checkpoint file."""
    p = Path(path)
    if is_model_folder(p):
        return Saved(p, GAN, p, None, read_config(p))
    ckpt = checkpoint.find(p)
    meta = checkpoint.read_meta(ckpt)
    kind = UPSCALER if meta.get("kind") == checkpoint.UPSCALER else GAN
    return Saved(p, kind, checkpoint.run_dir(ckpt), ckpt, meta)


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Generator:
    """The face generator of a run folder, checkpoint file or model folder (see :meth:`Saved.generator`)."""
    return open(path).generator(device, ema)


def load_upscaler(path: str | Path, device: str | torch.device = "cpu") -> SRGenerator:
    """The upscaler of a train-sr run, checkpoint, or a model folder that ships one (``export --upscaler``)."""
    return open(path).upscaler(device)


def read_config(path: str | Path) -> dict[str, Any]:
    """A model folder's config.json, checked to be one (one-line error otherwise)."""
    p = Path(path)
    try:
        info = read_json(p / CONFIG)
    except (OSError, ValueError) as e:
        raise FaceganError(f"{p / CONFIG} is not a readable model config ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise FaceganError(f"{p} is not a facegan model folder (config.json format {info.get('format') if isinstance(info, dict) else None!r}, "
                           f"expected {FORMAT!r})")
    return info


def _build(cls: type, arch: Any) -> Any:
    """The net of ``arch``, whose random init is overwritten at once: built without touching the
    caller's random state (fine-tuning from ``--init`` draws the same numbers as a fresh run)."""
    with torch.random.fork_rng(devices=[]):
        return cls(arch)


def _architecture(cls: type, d: Any, where: Path, what: str = "") -> Any:
    try:
        return cls.from_dict(d)
    except (ValueError, TypeError) as e:
        raise FaceganError(f"{where}: {what}{e}") from None


def _read_weights(path: Path, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The file's tensors, which must be exactly the net's (names, shapes, dtypes) and finite."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FaceganError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    want = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    have = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    if have != want:
        diff = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise FaceganError(f"{path} does not match its config.json architecture (first difference: {diff[0]})")
    bad = checkpoint.non_finite(tensors)
    if bad:
        raise FaceganError(f"{path} is damaged: {', '.join(bad[:3])} hold NaN/inf values")
    return tensors
