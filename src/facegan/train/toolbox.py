"""What every training loop does around its step, as plain functions: the run's toolbox.

The loops (train/loop.py: the GAN; train/sr.py: the upscaler) each read top to bottom — options,
ranks, data, nets, resume, then the step loop with its log, picture, checkpoint and evaluation
cadence written inline — and call these for what they share:

- :func:`start` checks every option and the run folder before any work; :func:`resume_config`
  and :func:`resume_folder` say what ``--resume`` continues;
- :class:`Budget` says when to stop (images, epochs, wall time, Ctrl-C / SIGTERM), the same on
  every rank;
- :class:`Meter` averages the step statistics over the ranks every ``log_every`` steps, refuses a
  diverged run, writes the JSONL log and drives the progress bar;
- :func:`snapshot`, :func:`save` and :func:`restore` write and read checkpoints that hold every
  rank's random state;
- :func:`disk_error` turns a full disk into one line naming the intact last checkpoint.

Promises the loops keep through them:
- exact resume: everything random is checkpointed or derived from (seed, step, rank), so N steps +
  resume + N steps gives the same weights, bit for bit on CPU, as 2N steps in one go — on one
  process or many (the checkpoint holds every rank's random state);
- never lose a run: the first Ctrl-C / SIGTERM finishes the current step on every rank and writes
  one checkpoint; a NaN or Inf loss stops the run *before* anything poisoned is written; an OS
  error (a full disk) ends the run with one line naming the intact last checkpoint;
- many ranks behave as one: ``--batch`` is the global batch, split evenly; the ranks agree on when
  to stop, average their log statistics and BatchNorm buffers, compare a fingerprint of their
  weights before each checkpoint, and only rank 0 writes files; a rank that dies or hangs becomes
  an error naming it on the others (within ``--dist-timeout``);
- no host↔device synchronisation inside a step: statistics accumulate on the device and are read
  every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from facegan import checkpoint, checks, viz
from facegan.config import BUDGETS, SRTrainConfig, TrainConfig, resumable, validate
from facegan.data.loader import BatchSampler
from facegan.data.prepare import PreparedData, absolute_source, open_prepared, resolve_dataset
from facegan.dist import Dist, env_world
from facegan.errors import FaceganError, describe_os_error
from facegan.fileio import sweep_stale, write_text_atomic

EXPLODING_LOSS = 1e3  # a GAN loss this large means the run is diverging, even while it is finite
DUPLICATE_SIGNAL_S = 5.0  # under torchrun a Ctrl-C reaches each rank twice (terminal, then launcher): one stop


@dataclass
class TrainResult:
    """How a training invocation ended. ``steps`` and ``images`` count the whole run (all resumes);
    ``start_step`` / ``start_images`` are where this invocation began."""

    run: Path
    checkpoint: Path | None
    steps: int
    images: int
    seconds: float
    stopped_by: str  # "budget", "time", "signal"
    start_step: int = 0
    start_images: int = 0
    nets: dict[str, nn.Module] = field(default_factory=dict)  # this rank's trained nets (the plain modules)


def start(cfg: TrainConfig | SRTrainConfig, resume: bool) -> TrainConfig | SRTrainConfig:
    """What every run does before any work: check every option and the run folder (swept of a killed
    run's temporaries), fix the data path.

    A new run stores its data as an absolute path, so ``--resume`` works from any directory. Of
    many ranks only rank 0 probes the run folder (the probe creates and removes it: racing ranks
    would remove it under each other).
    """
    validate(cfg)
    run = Path(cfg.out)
    if env_world()[0] == 0:
        run = checks.output_dir("--out", cfg.out)
        for folder in (run, run / "checkpoints", run / "samples"):  # what a killed run was writing goes now
            sweep_stale(folder)
    if not resume and checkpoint.list_checkpoints(run):
        raise FaceganError(f"{run} already holds a run; continue it with --resume, or pick another --out")
    return cfg if resume else replace(cfg, data=absolute_source(cfg.data))


def resume_folder(path: str | Path) -> Path:
    """The run folder that ``--resume PATH`` continues: PATH itself, or the run whose newest
    checkpoint PATH is (``RUN/checkpoints/ckpt-N.safetensors``, what a user sees in the summary).

    An older checkpoint, ``best.safetensors`` or a file outside a run is a one-line error: a run
    continues from its newest checkpoint only (its log and later checkpoints would contradict it).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        return p  # a folder, or nothing there: reading its checkpoint says which
    folder = p.absolute().parent  # absolute: a bare ckpt-N.safetensors given from inside RUN/checkpoints
    run = folder.parent
    saved = checkpoint.list_checkpoints(run) if folder.name == "checkpoints" else []
    if saved and p.resolve() == saved[-1].resolve():
        return run
    if saved:
        raise FaceganError(f"--resume continues a run from its newest checkpoint ({saved[-1].name}), not from {p.name}; "
                           f"give the run folder: --resume {run}")
    raise FaceganError(f"--resume takes a run folder (the --out of a training run), not the file {p}")


def resume_config(run: str | Path, **overrides: Any) -> TrainConfig | SRTrainConfig:
    """The saved config of ``run`` (a GAN or an upscaler run, or its newest checkpoint) with only the
    options the table marks resumable (budgets, device, speed, cadence) replaced; others are ignored."""
    run = resume_folder(run)
    meta = checkpoint.read_meta(run)
    cfg = checkpoint.saved_config(meta.get("kind"), meta["config"])
    given = {k: v for k, v in overrides.items() if v is not None and k in resumable(cfg)}
    if BUDGETS & given.keys():
        cfg = replace(cfg, max_images=None, epochs=None, max_time=None)
    return replace(cfg, out=str(run), **given)


def disk_error(e: OSError, run: Path, command: str) -> FaceganError:
    """An OS error mid-run (a full disk, a vanished folder) as one line: what failed, what is safe, how to go on."""
    good = checkpoint.list_checkpoints(run)
    kept = f"the last checkpoint {good[-1]} is intact" if good else "no checkpoint had been written yet"
    return FaceganError(f"{describe_os_error(e)}; {kept}; fix that, then continue with: facegan {command} --resume {run}"
                        if good else f"{describe_os_error(e)}; {kept}")


def warn(message: str) -> None:
    """A warning line on stderr that does not break a progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


class Budget:
    """When a run stops: its step budget, its wall-time budget (this invocation), or a signal.

    Inside ``with``, the first SIGINT/SIGTERM asks for a graceful stop — every rank finishes its
    step and rank 0 writes a checkpoint — and a second one interrupts at once (in a many-rank run
    only after DUPLICATE_SIGNAL_S, since torchrun forwards the terminal's Ctrl-C a second time).
    ``stopped_by`` says which ended the loop: "budget", "time" or "signal". With several ranks the
    decision is collective (the largest reason wins), so all stop after the same step.
    """

    REASONS = ("budget", "time", "signal")

    def __init__(self, total_steps: int | None, max_time: float | None, t_start: float, d: Dist | None = None) -> None:
        self.total_steps, self.max_time, self.t_start, self.d = total_steps, max_time, t_start, d
        self.stopped_by = "budget"
        self._signalled_at: float | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Budget":
        if threading.current_thread() is threading.main_thread():  # signals only work there
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._signalled_at is not None:
            if self.d is None or not self.d.active or time.time() - self._signalled_at > DUPLICATE_SIGNAL_S:
                raise KeyboardInterrupt
            return
        self._signalled_at = time.time()

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def running(self, step: int) -> bool:
        """Whether to take another step, ``step`` steps having been taken."""
        if self.total_steps is not None and step >= self.total_steps:
            return False
        reason = 2 if self._signalled_at is not None else 1 if self.max_time and time.time() - self.t_start >= self.max_time else 0
        if self.d is not None:
            reason = self.d.agree_max(reason)
        if reason:
            self.stopped_by = self.REASONS[reason]
        return not reason

    def more_after(self, step: int) -> bool:
        """Whether a step may follow step ``step`` (so its batch is worth prefetching)."""
        return self.total_steps is None or step + 1 < self.total_steps


def check_world(cfg: TrainConfig | SRTrainConfig, d: Dist) -> None:
    """The rules that need the number of ranks and their device (joined only now)."""
    if cfg.batch % d.world:
        raise FaceganError(f"--batch {cfg.batch} is the global batch and must split evenly over "
                           f"{d.world} ranks; give a multiple of {d.world}")
    if getattr(cfg, "sync_bn", False) and d.device.type != "cuda":
        raise FaceganError("--sync-bn needs CUDA (NCCL); on the CPU each rank's BatchNorm uses its own rows")


def rows(batch: int, d: Dist) -> tuple[int, int]:
    """This rank's rows [lo, hi) of each global batch."""
    per_rank = batch // d.world
    return d.rank * per_rank, (d.rank + 1) * per_rank


def dataset(source: str | None, res: int, channels: int, d: Dist, progress: bool) -> tuple[Path, PreparedData]:
    """The run's data prepared at ``res`` — by one process per node, the others then open it."""
    path = d.first_then_rest(lambda: resolve_dataset(source, res, channels, progress=progress))
    return path, open_prepared(path)


def total_steps(cfg: TrainConfig | SRTrainConfig, sampler: BatchSampler) -> int | None:
    """The step budget from --max-images and --epochs (the smaller); None with a time budget only."""
    spe = sampler.steps_per_epoch
    if spe == 0:
        raise FaceganError(f"the dataset has {sampler.size} training images, fewer than one batch of {cfg.batch}; "
                           "use a smaller --batch")
    budget_steps = [math.ceil(cfg.max_images / cfg.batch)] if cfg.max_images else []
    budget_steps += [math.ceil(cfg.epochs * spe)] if cfg.epochs else []
    return min(budget_steps) if budget_steps else None


def write_config(run: Path, cfg: TrainConfig | SRTrainConfig, facts: dict[str, Any], step: int) -> None:
    """config.json (the options and the facts of this invocation), and the log cut back to ``step``."""
    write_text_atomic(run / "config.json", json.dumps({**cfg.to_dict(), **facts}, indent=2))
    truncate_metrics(run / "metrics.jsonl", step)


def progress_bar(run: Path, total: int | None, step: int, batch: int, show: bool) -> tqdm:
    """The run's bar, counted in images."""
    return tqdm(total=total * batch if total else None, initial=step * batch, unit="img", unit_scale=True,
                dynamic_ncols=True, disable=not show, desc=run.name)


class Meter:
    """The step statistics, summed on the device and read every ``log_every`` steps: then averaged
    over the ranks (every rank gets the same numbers, so all stop together), checked, written to
    metrics.jsonl (and TensorBoard) and shown on the bar."""

    def __init__(self, cfg: TrainConfig | SRTrainConfig, run: Path, d: Dist, bar: tqdm, tb: Any, steps_per_epoch: int,
                 step: int, total_steps: int | None) -> None:
        self.cfg, self.run, self.d, self.bar, self.tb, self.spe = cfg, run, d, bar, tb, steps_per_epoch
        self.total_steps = total_steps
        self.t_start = self.t_log = time.time()
        self.step_log = step
        self.acc: torch.Tensor | None = None
        self.n = 0
        self.warned = False

    def add(self, stats: torch.Tensor) -> None:
        self.acc = stats if self.acc is None else self.acc.add_(stats)  # stats is the step's own fresh tensor
        self.n += 1

    def flush(self, step: int, record: Callable[[list[float]], tuple[dict[str, float], str]]) -> None:
        """Log the means since the last flush, if any step came since; ``record`` names them: (log-line
        fields, bar text). Before a checkpoint this is what refuses a diverged state."""
        if not self.n:
            return
        cfg, d, B = self.cfg, self.d, self.cfg.batch
        now = time.time()
        means = d.mean_(self.acc / max(self.n, 1)).tolist()
        fields_, text = record(means)
        rec = {"step": step, "images": step * B, "epoch": step // self.spe, **fields_,
               "img_per_s": (step - self.step_log) * B / max(now - self.t_log, 1e-9), "time": round(now - self.t_start, 3)}
        losses = {k: v for k, v in fields_.items() if k.startswith("loss")}
        if not all(math.isfinite(v) for v in means):
            good = checkpoint.list_checkpoints(self.run)
            raise FaceganError(f"training diverged at step {step}: {', '.join(f'{k}={v}' for k, v in losses.items())}; "
                               f"last good checkpoint: {good[-1] if good else 'none'}; try a lower learning rate", exit_code=3)
        if not self.warned and d.is_main and losses and max(abs(v) for v in losses.values()) > EXPLODING_LOSS:
            warn(f"{', '.join(f'{k}={v:.3g}' for k, v in losses.items())} at step {step}: the losses are exploding, so "
                 "the run is probably diverging; try a lower learning rate")
            self.warned = True
        d.on_main(lambda: self._write(rec))
        if cfg.max_time:  # a time budget: re-estimate the total so the bar shows an ETA
            by_time = step * B + int(max(cfg.max_time - (now - self.t_start), 0) * rec["img_per_s"])
            self.bar.total = min(by_time, self.total_steps * B) if self.total_steps else by_time
        self.bar.update((step - self.step_log) * B)
        self.bar.set_postfix_str(f"{text} {rec['img_per_s']:.0f} img/s")
        self.acc, self.n, self.t_log, self.step_log = None, 0, now, step

    def _write(self, rec: dict[str, Any]) -> None:
        append_jsonl(self.run / "metrics.jsonl", rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "images", "epoch", "time"):
                    self.tb.add_scalar(f"train/{k}", v, rec["images"])


def snapshot(d: Dist, nets: dict[str, nn.Module], rank_rng: dict[str, torch.Tensor],
             state: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]], step: int, batch: int,
             also: dict[str, list[torch.Tensor]] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Collective: buffers averaged, weights compared, random states gathered; (tensors, meta) on rank 0.

    The ranks compare the trained ``nets``' parameters and buffers, and any tensors in ``also``;
    ``rank_rng`` is this rank's own random states, saved for every rank; ``state()`` everything
    else the checkpoint holds (called on rank 0 only). The meta names the nets the file holds
    (``nets``), so a reader need not infer them from the config.
    """
    d.sync_buffers(nets.values())
    d.check_same({**{k: [*n.parameters(), *n.buffers()] for k, n in nets.items()}, **(also or {})}, step)
    rngs = d.gather(rank_rng)
    if not d.is_main:
        return None
    tensors, meta = state()
    held = sorted({k.split(".")[0] for k in tensors if not k.startswith(("opt", "rng."))})  # the nets: G, D, G_ema / SR, D
    for r, states in enumerate(rngs):
        tensors.update({(f"rng.{k}" if r == 0 else f"rng.r{r}.{k}"): v for k, v in states.items()})
    return tensors, {**meta, "images": step * batch, "world_size": d.world, "nets": held}


def restore(run: Path, d: Dist, load: Callable[[dict[str, torch.Tensor], dict[str, Any]], None],
            set_rank_rng: Callable[[dict[str, torch.Tensor]], None], reseed: Callable[[int], None]) -> int:
    """Every rank reads the run's last checkpoint (the run folder must be visible to all nodes):
    ``load`` takes the nets, optimisers and shared streams, ``set_rank_rng`` this rank's own
    states; a rank the checkpoint has none for (the run grew) is ``reseed``-ed from the step. Returns the step."""
    tensors, meta = checkpoint.load(checkpoint.find(run))
    load(tensors, meta)
    saved_world = int(meta.get("world_size", 1))
    prefix = "rng." if d.rank == 0 else f"rng.r{d.rank}."
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
    step = int(meta["step"])
    if d.rank < saved_world:
        set_rank_rng(mine)
    else:
        reseed(step)
    if saved_world != d.world and d.is_main:
        warn(f"this run was trained on {saved_world} rank(s) and continues on {d.world}: the data order and everything "
             "drawn per image continue exactly (they follow images seen); dropout and BatchNorm batch statistics "
             "do not match a continuation on the old number of ranks")
    return step


def tensorboard(run: Path, wanted: bool, d: Dist) -> Any:
    """A SummaryWriter on RUN/tensorboard (x axis: images seen) on rank 0 when asked for, else None;
    a one-line error without the package."""
    if not (wanted and d.is_main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FaceganError("--tensorboard needs the tensorboard package: pip install 'facegan[tensorboard]'") from None
    return SummaryWriter(str(run / "tensorboard"))


def append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past ``step`` — written by a run killed after its last checkpoint — and any torn
    line a crash or a full disk left; atomically, so a kill during the rewrite loses no line."""
    if not path.exists() and step == 0:
        return
    recs = [r for r in viz.read_metrics(path) if r["step"] <= step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in recs))
