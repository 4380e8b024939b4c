"""Checkpoints that survive crashes, can never execute code, and are checked before they are used.

A checkpoint is ONE safetensors file: tensors (G, D, optimizer moments, RNG states) plus a JSON
document in the safetensors header (config, step, images seen, optimizer hyper-parameters).
Safetensors holds raw arrays only, so loading a checkpoint from anywhere is safe — unlike the
pickles of torch.save, which run arbitrary code and broke between versions elsewhere.

A file is still data from anywhere, so :func:`load` trusts nothing past the header: the config
is type- and range-checked, the nets it describes are built on the ``meta`` device (which
allocates nothing) to list the names, shapes and dtypes the file must hold — no more, no fewer
— and only then are tensors read, and refused if any is NaN or infinite. A 1 KB file claiming a
200 000-map generator is therefore one ``error:`` line, not a 2.5 TB allocation.

Writes are atomic: the file is written under a temporary name in the same folder, fsynced and
renamed, so a run killed at any instant leaves every previous checkpoint intact and never a
half-written one under a checkpoint name. Nothing non-finite is ever written: a diverged state
(inf in a BatchNorm buffer included) is refused, so the last good checkpoint stays the last one.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from facegan.config import SRTrainConfig, TrainConfig
from facegan.errors import FaceganError
from facegan.fileio import atomic_path, parse_json
from facegan.models.dcgan import build
from facegan.models.srresnet import build_sr

FORMAT = "facegan-checkpoint-1"
BEST = "best.safetensors"
MAX_WORLD = 65_536  # ranks a checkpoint may record random states for
RANK_RNG = ("torch", "cuda", "gen")  # per-rank random states a checkpoint may hold (rng.rR.NAME)
UPSCALER = "upscaler"  # meta "kind" of `train-sr` checkpoints; GAN checkpoints have no kind
_NAME = re.compile(r"^ckpt-(\d{8})\.safetensors$")


def write_atomic(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + meta to ``path`` via temp file, fsync and rename; refuse non-finite values.

    Every floating tensor is checked, buffers included: a huge learning rate can leave the
    logged losses finite while D's BatchNorm running_var is already inf.
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    bad = non_finite(tensors)
    if bad:
        raise FaceganError(f"the run diverged: {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''} hold NaN/inf, so "
                           f"{Path(path).name} was not written; {last_good(run_dir(Path(path)))}; try a lower learning rate",
                           exit_code=3)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _serialize(f, tensors, {"facegan": json.dumps(meta)})


def _serialize(f: BinaryIO, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors format, streamed into our own file.

    safetensors' ``save_file`` writes to a temporary name of its own and renames it over the
    target, so a kill mid-write would leave a checkpoint-sized file our sweep cannot attribute;
    its ``save`` builds the whole file in memory. The format is simple enough to stream: an 8-byte
    little-endian header length, a JSON header (name → dtype, shape, byte range; padded with
    spaces to 8 bytes), then the raw little-endian bytes in header order. ``load`` reads it back
    with safetensors itself.
    """
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)) + text)
    for name in sorted(tensors):
        f.write(tensors[name].reshape(-1).view(torch.uint8).numpy().data)


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors holding a NaN or an inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def last_good(run: Path) -> str:
    """"last good checkpoint: PATH" (or none) — what every diverged or failed run tells its user."""
    good = list_checkpoints(run)
    return f"last good checkpoint: {good[-1] if good else 'none'}"


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
    return float(read_meta(path).get("fid", math.inf)) if path.is_file() else math.inf


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Numbered checkpoints of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    return sorted(p for p in ckdir.iterdir() if _NAME.match(p.name) and p.is_file())


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
    """(tensors, meta) of a checkpoint, wholly validated; a one-line FaceganError for anything else."""
    p, meta = _inspect(path)
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise FaceganError(f"{p} is not a readable facegan checkpoint ({type(e).__name__}: {e})") from None
    bad = non_finite(tensors)
    if bad:
        raise FaceganError(f"{p} is damaged: {', '.join(bad[:3])} hold NaN/inf values")
    return tensors, meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The validated JSON meta of a checkpoint, reading only its header (no tensor data)."""
    return _inspect(path)[1]


def _inspect(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Read and check a checkpoint's header: meta, config, and each tensor's name, shape and dtype."""
    p = find(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
            have = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
        meta = parse_json(header["facegan"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
        raise FaceganError(f"{p} is not a readable facegan checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise FaceganError(f"{p} has checkpoint format {fmt!r}, expected {FORMAT!r}")
    try:
        required, optional = _expected(meta)
    except FaceganError as e:
        raise FaceganError(f"{p} is damaged or not a facegan checkpoint: {e}") from None
    problems = [f"missing tensor {k}" for k in required if k not in have]
    problems += [f"unexpected tensor {k}" for k in have if k not in required and k not in optional]
    for k, (shape, dtype) in have.items():
        want = required.get(k) or optional.get(k)
        if want is not None and not _fits(shape, dtype, want):
            problems.append(f"{k} is {dtype}{list(shape)}, expected {want[1]}{list(want[0]) if want[0] else ''}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise FaceganError(f"{p} does not match its own config: {'; '.join(problems[:3])}{more}")
    return p, meta


_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
           torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
_RNG_BYTES = 1 << 16  # a generator's state is a few KB; anything larger is not one
Spec = tuple[tuple[int, ...] | None, str]  # shape (None: any 1-D up to _RNG_BYTES) and safetensors dtype


def _fits(shape: tuple[int, ...], dtype: str, want: Spec) -> bool:
    if want[0] is None:
        return dtype == want[1] and len(shape) == 1 and shape[0] <= _RNG_BYTES
    return (shape, dtype) == want


def _expected(meta: dict[str, Any]) -> tuple[dict[str, Spec], dict[str, Spec]]:
    """(required, optional) tensor specs for a checkpoint with this meta, from nets built on "meta"."""
    for key in ("step", "images"):
        if not isinstance(meta.get(key), int) or isinstance(meta[key], bool) or meta[key] < 0:
            raise FaceganError(f"{key!r} is {meta.get(key)!r}, expected a count ≥ 0")
    if "fid" in meta and not isinstance(meta["fid"], (int, float)):
        raise FaceganError(f"'fid' is {meta['fid']!r}, expected a number")
    if "d_features" in meta and not isinstance(meta["d_features"], str):
        raise FaceganError(f"'d_features' is {meta['d_features']!r:.40}, expected the name of feature weights")
    kind = meta.get("kind")
    if kind not in (None, UPSCALER):
        raise FaceganError(f"unknown checkpoint kind {kind!r}")
    # Types checked, the architecture's ranges checked (ModelConfig / SRConfig); the training rules
    # of config.validate are not: they apply when a run is (re)started, and a rule added later must
    # not make an older run unreadable.
    cfg = saved_config(kind, meta.get("config"))
    with torch.device("meta"):  # shapes without memory, whatever the config claims
        nets = dict(zip(("SR", "D"), build_sr(cfg.model))) if kind == UPSCALER else dict(zip(("G", "D"), build(cfg.model, pretrained=False)))
    trained = {"optSR": "SR", "optD": "D"} if kind == UPSCALER else {"optG": "G", "optD": "D"}
    if kind == UPSCALER and cfg.adv <= 0:  # the critic is saved only when it is trained
        del nets["D"], trained["optD"]
    if kind is None and cfg.has_ema:
        nets["G_ema"] = nets["G"]
    if "nets" in meta and meta["nets"] != sorted(nets):  # what the file says it holds must be what its config builds
        raise FaceganError(f"'nets' is {meta['nets']!r:.80}, but its config makes {sorted(nets)}")
    required: dict[str, Spec] = {"rng.torch": ((torch.get_rng_state().numel(),), "U8"), "rng.gen": (None, "U8")}
    for prefix, net in nets.items():
        required.update({f"{prefix}.{k}": (tuple(v.shape), _DTYPES.get(v.dtype, str(v.dtype))) for k, v in net.state_dict().items()})
    world = meta.get("world_size", 1)
    if not isinstance(world, int) or isinstance(world, bool) or not 1 <= world <= MAX_WORLD:
        raise FaceganError(f"'world_size' is {world!r}, expected a count of ranks in 1 … {MAX_WORLD}")
    optional: dict[str, Spec] = {"rng.cuda": (None, "U8")}
    for r in range(1, world):  # every rank's own random states (train/toolbox.py)
        optional.update({f"rng.r{r}.{k}": (None, "U8") for k in RANK_RNG})
    for prefix, name in trained.items():
        params = list(nets[name].parameters())
        _check_groups(prefix, meta.get(prefix), len(params))
        moments = required if meta["step"] > 0 else optional  # Adam has no state before its first step
        for i, w in enumerate(params):
            moments.update({f"{prefix}.{i}.step": ((), "F32"), f"{prefix}.{i}.exp_avg": (tuple(w.shape), "F32"),
                            f"{prefix}.{i}.exp_avg_sq": (tuple(w.shape), "F32")})
    return required, optional


def saved_config(kind: str | None, d: Any) -> TrainConfig | SRTrainConfig:
    """The typed config a run saved (checkpoint meta or config.json), by the run's kind."""
    return (SRTrainConfig if kind == UPSCALER else TrainConfig).from_dict(d)


def _check_groups(prefix: str, groups: Any, n_params: int) -> None:
    """An optimizer's saved param groups: one Adam group over all parameters, with sane numbers."""
    ok = isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)
    g = groups[0] if ok else {}
    ok = ok and g.get("params") == list(range(n_params))
    ok = ok and all(isinstance(g.get(k), (int, float)) and not isinstance(g.get(k), bool) and math.isfinite(g[k])
                    and g[k] >= 0 for k in ("lr", "eps", "weight_decay"))
    betas = g.get("betas")
    ok = ok and isinstance(betas, list) and len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
    ok = ok and all(isinstance(v, (bool, type(None))) for k, v in g.items() if k not in ("params", "lr", "eps", "weight_decay", "betas"))
    if not ok:
        raise FaceganError(f"{prefix!r} does not hold one Adam parameter group over {n_params} parameters")


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
    return {"rng.gen": gen.get_state(), **{f"rng.{k}": v for k, v in process_rng(device).items()}}


def process_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's global random states (torch's, and CUDA's on a GPU): what dropout draws from."""
    return {"torch": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}


def set_process_rng(states: dict[str, torch.Tensor], device: torch.device) -> None:
    """Inverse of :func:`process_rng` (entries it does not hold are left alone)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def unpack_generator(state: torch.Tensor, gen: torch.Generator, device: torch.device) -> None:
    """Restore one generator's state; a one-line error when it was saved on another kind of device."""
    if state.numel() != gen.get_state().numel():
        raise FaceganError(f"this checkpoint's random state comes from another kind of device than {device.type}; "
                           "resume on the device type the run was trained on (--device) for an exact continuation")
    gen.set_state(state)


def unpack_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    """Inverse of :func:`pack_optimizer`: restore the optimizer exactly."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = v.clone()  # never alias the caller's tensors
    opt.load_state_dict({"state": state, "param_groups": groups})
