"""The run harness: everything a training run does around its step, the same for every loop.

A loop (train/loop.py: the GAN; train/sr.py: the upscaler) supplies a :class:`Trainer` — its
nets, one step, what its log lines and checkpoints hold, and its pictures. The harness does the
rest, in this order: check every option and the run folder; join the other ranks (torchrun) or
stay alone; build the trainer; restore the last checkpoint on ``--resume``; then step until the
budget, the clock or a signal says stop, logging, drawing and checkpointing on their cadences.

Promises it keeps for every loop:
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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from facegan import checkpoint, checks, viz
from facegan.config import BUDGETS, SRTrainConfig, TrainConfig, validate
from facegan.data.loader import BatchSampler, Prefetcher
from facegan.data.prepare import PreparedData, absolute_source, open_prepared, resolve_dataset
from facegan.dist import Dist, env_world, rank_seed, session
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


class Trainer:
    """What a training loop supplies to the harness. ``h`` is the :class:`Harness` running it."""

    command: ClassVar[str]  # "train" / "train-sr": how the user continues the run
    sampler: BatchSampler
    h: "Harness"

    def step(self, step: int, batch_u8: torch.Tensor) -> torch.Tensor:
        """One update on this rank's rows of global batch ``step``; the statistics to log, on the device."""
        raise NotImplementedError

    def record(self, means: list[float]) -> tuple[dict[str, float], str]:
        """(log-line fields, progress-bar text) from the step statistics averaged since the last log."""
        raise NotImplementedError

    def nets(self) -> dict[str, torch.nn.Module]:
        """The trained nets: their buffers are averaged over the ranks, their weights must agree."""
        raise NotImplementedError

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything a checkpoint holds but the per-rank random states (see :meth:`rank_rng`)."""
        raise NotImplementedError

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def rank_rng(self) -> dict[str, torch.Tensor]:
        """This rank's own random states (name → state), saved for every rank: by default torch's
        global streams (what dropout draws from)."""
        return checkpoint.process_rng(self.h.device)

    def set_rank_rng(self, states: dict[str, torch.Tensor]) -> None:
        checkpoint.set_process_rng(states, self.h.device)

    def reseed(self, step: int) -> None:
        """Seed this rank's own streams from (seed, rank, step): a rank the checkpoint has no state for."""
        torch.manual_seed(rank_seed(self.h.cfg.seed, self.h.dist.rank, f"torch/{step}"))

    def draw(self, step: int) -> None:
        """The run's pictures at ``step`` (rank 0 only)."""

    def weights(self) -> dict[str, list[torch.Tensor]]:
        """What the ranks compare before a checkpoint (default: the nets' parameters and buffers)."""
        return {k: [*m.parameters(), *m.buffers()] for k, m in self.nets().items()}

    def after_step(self, step: int) -> None:
        """Anything else a loop does after step ``step`` on every rank (the GAN's periodic FID)."""

    def info(self) -> dict[str, Any]:
        """Extra facts for config.json (the dataset and device are the harness's)."""
        return {}


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
    """The saved config of ``run`` (a GAN or an upscaler run, or its newest checkpoint) with only
    budgets, device, speed options and logging cadence replaceable."""
    run = resume_folder(run)
    meta = checkpoint.read_meta(run)
    cfg = checkpoint.saved_config(meta.get("kind"), meta["config"])
    allowed = BUDGETS | {"device", "precision", "channels_last", "tf32", "compile", "resident", "tensorboard",
                         "log_every", "sample_every", "ckpt_every", "keep", "eval_every", "eval_n", "eval_metrics",
                         "dist_timeout"}
    given = {k: v for k, v in overrides.items() if v is not None and k in allowed & {f.name for f in fields(cfg)}}
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


class Harness:
    """One run of one loop: ``Harness(cfg, resume, progress).run(TrainerClass)``."""

    def __init__(self, cfg: TrainConfig | SRTrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg = start(cfg, resume)
        self.resume = resume
        self.run_dir = Path(self.cfg.out)
        self.progress_wanted = progress
        self.dist = Dist()
        self.tb: Any = None
        self.data: dict[str, Any] = {}  # what config.json says about the data

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def progress(self) -> bool:
        """Whether this process shows progress bars (rank 0 only)."""
        return self.progress_wanted and self.dist.is_main

    @property
    def step(self) -> int:
        """Steps taken so far in the whole run (kept on the Dist, whose heartbeat reports it)."""
        return self.dist.step

    @step.setter
    def step(self, value: int) -> None:
        self.dist.step = value

    @property
    def rows(self) -> tuple[int, int]:
        """This rank's rows [lo, hi) of each global batch."""
        per_rank = self.cfg.batch // self.dist.world
        return self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank

    def dataset(self, res: int, channels: int) -> tuple[Path, PreparedData]:
        """The run's data prepared at ``res`` — by one process per node, the others then open it."""
        path = self.dist.first_then_rest(lambda: resolve_dataset(self.cfg.data, res, channels, progress=self.progress))
        data = open_prepared(path)
        self.data = {"dataset": str(path), "dataset_count": len(data.images)}
        return path, data

    def run(self, make: type[Trainer]) -> TrainResult:
        """Join the other ranks (or stay alone), train, leave."""
        with session(self.cfg.device, self.cfg.dist_timeout) as self.dist:
            try:
                if self.cfg.batch % self.dist.world:
                    raise FaceganError(f"--batch {self.cfg.batch} is the global batch and must split evenly over "
                                       f"{self.dist.world} ranks; give a multiple of {self.dist.world}")
                if getattr(self.cfg, "sync_bn", False) and self.device.type != "cuda":
                    raise FaceganError("--sync-bn needs CUDA (NCCL); on the CPU each rank's BatchNorm uses its own rows")
                if getattr(self.cfg, "tensorboard", False) and self.dist.is_main:
                    self.tb = _tensorboard(self.run_dir)
                t = make(self)
                if self.dist.rank:  # after the nets (the same init everywhere): this rank's own dropout stream
                    torch.manual_seed(rank_seed(self.cfg.seed, self.dist.rank, "torch"))
                return self._train(t)
            finally:
                if self.tb is not None:
                    self.tb.close()

    # ---- checkpoints ---------------------------------------------------------------------------
    def _snapshot(self, t: Trainer) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Collective: buffers averaged, weights compared, random states gathered; (tensors, meta) on rank 0."""
        d = self.dist
        d.sync_buffers(t.nets().values())
        d.check_same(t.weights(), self.step)
        rngs = d.gather(t.rank_rng())
        if not d.is_main:
            return None
        tensors, meta = t.state()
        for r, states in enumerate(rngs):
            tensors.update({(f"rng.{k}" if r == 0 else f"rng.r{r}.{k}"): v for k, v in states.items()})
        return tensors, {**meta, "images": self.step * self.cfg.batch, "world_size": d.world}

    def save_best(self, t: Trainer, extra: dict[str, Any]) -> None:
        """Write checkpoints/best.safetensors (collective; rank 0 writes)."""
        snap = self._snapshot(t)
        self.dist.on_main(lambda: checkpoint.save_best(self.run_dir, self.step, snap[0], {**snap[1], **extra}))

    def _restore(self, t: Trainer) -> int:
        """Every rank reads the last checkpoint (the run folder must be visible to all nodes)."""
        d = self.dist
        tensors, meta = checkpoint.load(checkpoint.find(self.run_dir))
        t.restore(tensors, meta)
        saved_world = int(meta.get("world_size", 1))
        prefix = "rng." if d.rank == 0 else f"rng.r{d.rank}."
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
        step = int(meta["step"])
        if d.rank < saved_world:
            t.set_rank_rng(mine)
        else:
            t.reseed(step)
        if saved_world != d.world and d.is_main:
            warn(f"this run was trained on {saved_world} rank(s) and continues on {d.world}: the data order and everything "
                 "drawn per image continue exactly (they follow images seen); dropout and BatchNorm batch statistics "
                 "do not match a continuation on the old number of ranks")
        return step

    # ---- the loop --------------------------------------------------------------------------------
    def _train(self, t: Trainer) -> TrainResult:
        cfg, d, run = self.cfg, self.dist, self.run_dir
        spe = t.sampler.steps_per_epoch
        if spe == 0:
            raise FaceganError(f"the dataset has {t.sampler.size} training images, fewer than one batch of {cfg.batch}; "
                               "use a smaller --batch")
        budget_steps = [math.ceil(cfg.max_images / cfg.batch)] if cfg.max_images else []
        budget_steps += [math.ceil(cfg.epochs * spe)] if cfg.epochs else []
        total_steps = min(budget_steps) if budget_steps else None
        self.step = first_step = self._restore(t) if self.resume else 0
        def start_files() -> None:
            facts = {**self.data, **t.info(), "device": str(d.device), "world_size": d.world}
            write_text_atomic(run / "config.json", json.dumps({**cfg.to_dict(), **facts}, indent=2))
            truncate_metrics(run / "metrics.jsonl", self.step)

        d.on_main(start_files)  # rank 0 writes; a failure there (a full disk) stops every rank with one line

        B = cfg.batch
        prefetch = Prefetcher(t.sampler, d.device)
        acc, n_acc = None, 0
        t_start = time.time()
        t_log, step_log = t_start, self.step
        saved_step, last_ckpt, warned = (self.step if self.resume else -1), None, False
        bar = tqdm(total=total_steps * B if total_steps else None, initial=self.step * B, unit="img", unit_scale=True,
                   dynamic_ncols=True, disable=not self.progress, desc=run.name)

        def log() -> None:
            nonlocal acc, n_acc, t_log, step_log, warned
            now, step = time.time(), self.step
            means = d.mean_(acc / max(n_acc, 1)).tolist()  # every rank gets the same numbers, so all stop together
            fields_, text = t.record(means)
            rec = {"step": step, "images": step * B, "epoch": step // spe, **fields_,
                   "img_per_s": (step - step_log) * B / max(now - t_log, 1e-9), "time": round(now - t_start, 3)}
            losses = {k: v for k, v in fields_.items() if k.startswith("loss")}
            if not all(math.isfinite(v) for v in means):
                good = checkpoint.list_checkpoints(run)
                raise FaceganError(f"training diverged at step {step}: {', '.join(f'{k}={v}' for k, v in losses.items())}; "
                                   f"last good checkpoint: {good[-1] if good else 'none'}; try a lower learning rate", exit_code=3)
            if not warned and d.is_main and losses and max(abs(v) for v in losses.values()) > EXPLODING_LOSS:
                warn(f"{', '.join(f'{k}={v:.3g}' for k, v in losses.items())} at step {step}: the losses are exploding, so "
                     "the run is probably diverging; try a lower learning rate")
                warned = True
            d.on_main(lambda: write_log(rec))
            if cfg.max_time:  # a time budget: re-estimate the total so the bar shows an ETA
                by_time = step * B + int(max(cfg.max_time - (now - t_start), 0) * rec["img_per_s"])
                bar.total = min(by_time, total_steps * B) if total_steps else by_time
            bar.update((step - step_log) * B)
            bar.set_postfix_str(f"{text} {rec['img_per_s']:.0f} img/s")
            acc, n_acc, t_log, step_log = None, 0, now, step

        def write_log(rec: dict[str, Any]) -> None:
            append_jsonl(run / "metrics.jsonl", rec)
            if self.tb is not None:
                for k, v in rec.items():
                    if k not in ("step", "images", "epoch", "time"):
                        self.tb.add_scalar(f"train/{k}", v, rec["images"])

        def draw() -> None:
            d.sync_buffers(t.nets().values())  # what rank 0 draws is what every rank holds
            d.on_main(lambda: t.draw(self.step))

        def save() -> None:
            nonlocal last_ckpt, saved_step
            if n_acc:
                log()  # checks finiteness first: a diverged state is never written
            snap = self._snapshot(t)

            def write() -> Path:
                path = checkpoint.save(run, self.step, *snap, keep=cfg.keep)
                t.draw(self.step)
                return path

            last_ckpt = d.on_main(write)[0]
            saved_step = self.step

        try:
            with Budget(total_steps, cfg.max_time, t_start, d) as budget:
                while budget.running(self.step):
                    stats = t.step(self.step, prefetch.get(self.step, budget.more_after(self.step)))
                    acc = stats if acc is None else acc.add_(stats)  # stats is the step's own fresh tensor
                    n_acc += 1
                    self.step += 1
                    if self.step % cfg.log_every == 0:
                        log()
                    t.after_step(self.step)
                    if self.step % cfg.ckpt_every == 0:
                        save()
                    elif self.step % cfg.sample_every == 0:
                        draw()
                if self.step != saved_step:
                    save()
        except OSError as e:
            raise disk_error(e, run, t.command) from None
        finally:
            prefetch.close()
            bar.close()
        return TrainResult(run, last_ckpt or (checkpoint.list_checkpoints(run) or [None])[-1], self.step, self.step * B,
                           time.time() - t_start, budget.stopped_by, first_step, first_step * B)


def _tensorboard(run: Path) -> Any:
    """A SummaryWriter on RUN/tensorboard (x axis: images seen), or a one-line error without the package."""
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
