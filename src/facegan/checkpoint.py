"""Checkpoints that survive crashes and can never execute code.

A checkpoint is ONE safetensors file: tensors (G, D, optimizer moments, RNG states) plus a JSON
document in the safetensors header (config, step, images seen, optimizer hyper-parameters).
Safetensors holds raw arrays only, so loading a checkpoint from anywhere is safe — unlike the
pickles of torch.save, which run arbitrary code and broke between versions elsewhere.

Writes are atomic: the file is written under a temporary name in the same folder, fsynced and
renamed, so a run killed at any instant leaves every previous checkpoint intact and never a
half-written one under a checkpoint name.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from facegan.errors import FaceganError
from facegan.fileio import atomic_path

FORMAT = "facegan-checkpoint-1"
BEST = "best.safetensors"
UPSCALER = "upscaler"  # meta "kind" of `train-sr` checkpoints; GAN checkpoints have no kind
_NAME = re.compile(r"^ckpt-(\d{8})\.safetensors$")


def write_atomic(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + meta to ``path`` via temp file, fsync and rename."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"facegan": json.dumps(meta)})


def module_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The state dict of one net (``"G"`` or ``"D"``) out of a checkpoint's flat tensors."""
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def run_dir(ckpt: Path) -> Path:
    """The run folder a checkpoint file belongs to (its own folder for a loose file)."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def save(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], keep: int = 3) -> Path:
    """Save ``ckpt-<step>.safetensors`` in ``run_dir/checkpoints`` and keep only the last ``keep``."""
    ckdir = Path(run_dir) / "checkpoints"
    path = ckdir / f"ckpt-{step:08d}.safetensors"
    write_atomic(path, tensors, {"format": FORMAT, "step": step, **meta})
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def save_best(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``checkpoints/best.safetensors`` (never pruned by ``keep``); meta should hold "fid"."""
    path = Path(run_dir) / "checkpoints" / BEST
    write_atomic(path, tensors, {"format": FORMAT, "step": step, **meta})
    return path


def best_fid(run_dir: Path) -> float:
    """FID of the run's best checkpoint, or inf when there is none (so any FID beats it)."""
    path = Path(run_dir) / "checkpoints" / BEST
    return float(load(path)[1].get("fid", math.inf)) if path.is_file() else math.inf


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Numbered checkpoints of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    return sorted(p for p in ckdir.iterdir() if _NAME.match(p.name))


def find(path: str | Path) -> Path:
    """A checkpoint file from a checkpoint path or a run folder (its latest checkpoint)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        cks = list_checkpoints(p)
        if cks:
            return cks[-1]
        raise FaceganError(f"no checkpoints in run folder {p} (train it first: facegan train --out {p})")
    raise FaceganError(f"checkpoint or run folder not found: {p}")


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint; a clear FaceganError for anything that is not one."""
    p = find(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(p))
        meta = json.loads(header["facegan"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise FaceganError(f"{p} is not a readable facegan checkpoint ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise FaceganError(f"{p} has checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return tensors, meta


def pack_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimizer state as flat tensors ``prefix.<param>.<key>`` plus JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def pack_rng(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states exact resume needs: torch's global one, the run's generator, CUDA's."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.gen": gen.get_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def unpack_rng(tensors: dict[str, torch.Tensor], gen: torch.Generator, device: torch.device) -> None:
    """Inverse of :func:`pack_rng`."""
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def unpack_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    """Inverse of :func:`pack_optimizer`: restore the optimizer exactly."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = v.clone()  # never alias the caller's tensors
    opt.load_state_dict({"state": state, "param_groups": groups})
