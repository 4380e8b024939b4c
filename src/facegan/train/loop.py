"""The training loop, top to bottom: data → nets → alternating D/G steps → logs, grids, checkpoints.

Design choices that matter to users:
- exact resume: everything random (init, latents, label noise, flips, dropout, data order) comes
  from states that are checkpointed or derived from (seed, step), so N steps + resume + N steps
  gives the same weights, bit for bit on CPU, as 2N steps in one go;
- never lose a run: Ctrl-C / SIGTERM finish the current step and write a checkpoint; a NaN or
  Inf loss stops the run *before* anything poisoned is written (and checkpoint.write_atomic
  refuses any non-finite tensor, buffers included); a full disk or another OS error ends the run
  with one line naming the intact last checkpoint and the command that continues it;
- no host↔device synchronisation inside a step: statistics accumulate on the device and are
  read every ``log_every`` steps;
- data-parallel ready: sampling is rank-aware and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from facegan import checkpoint, checks, viz
from facegan.config import BUDGETS, SRTrainConfig, TrainConfig, validate
from facegan.data.loader import BatchSampler, Prefetcher, to_model_input
from facegan.data.prepare import absolute_source, open_prepared, resolve_dataset
from facegan.device import autocast as device_autocast
from facegan.device import configure, pick_device, pick_precision, resident_images
from facegan.errors import FaceganError, describe_os_error
from facegan.fileio import write_text_atomic
from facegan.models.dcgan import Discriminator, Generator, build
from facegan.train import augment, ema, loss


EXPLODING_LOSS = 1e3  # a GAN loss this large means the run is diverging, even while it is finite


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


def start(cfg: TrainConfig | SRTrainConfig, resume: bool) -> TrainConfig | SRTrainConfig:
    """What both loops do before any work: check every option and the run folder, fix the data path.

    A new run stores its data as an absolute path, so ``--resume`` works from any directory.
    """
    validate(cfg)
    run = checks.output_dir("--out", cfg.out)
    if not resume and checkpoint.list_checkpoints(run):
        raise FaceganError(f"{run} already holds a run; continue it with --resume, or pick another --out")
    return cfg if resume else replace(cfg, data=absolute_source(cfg.data))


def disk_error(e: OSError, run: Path, command: str) -> FaceganError:
    """An OS error mid-run (a full disk, a vanished folder) as one line: what failed, what is safe, how to go on."""
    good = checkpoint.list_checkpoints(run)
    kept = f"the last checkpoint {good[-1]} is intact" if good else "no checkpoint had been written yet"
    return FaceganError(f"{describe_os_error(e)}; {kept}; fix that, then continue with: facegan {command} --resume {run}"
                        if good else f"{describe_os_error(e)}; {kept}")


def warn(message: str) -> None:
    """A warning line on stderr that does not break a progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when run directly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def resume_config(run: Path, **overrides: Any) -> TrainConfig | SRTrainConfig:
    """The saved config of ``run`` (a GAN or an upscaler run) with only budgets, device, speed
    options and logging cadence replaceable."""
    meta = checkpoint.read_meta(run)
    cfg = checkpoint.saved_config(meta.get("kind"), meta["config"])
    allowed = BUDGETS | {"device", "precision", "channels_last", "tf32", "compile", "resident", "tensorboard",
                         "log_every", "sample_every", "ckpt_every", "keep", "eval_every", "eval_n"}
    given = {k: v for k, v in overrides.items() if v is not None and k in allowed & {f.name for f in fields(cfg)}}
    if BUDGETS & given.keys():
        cfg = replace(cfg, max_images=None, epochs=None, max_time=None)
    return replace(cfg, out=str(run), **given)


class Budget:
    """When a training loop stops: its step budget, its wall-time budget (this invocation), or a signal.

    Inside ``with``, the first SIGINT/SIGTERM asks for a graceful stop — the loop finishes its step
    and writes a checkpoint — and a second one interrupts at once. ``stopped_by`` says which ended
    the loop: "budget", "time" or "signal".
    """

    def __init__(self, total_steps: int | None, max_time: float | None, t_start: float) -> None:
        self.total_steps, self.max_time, self.t_start = total_steps, max_time, t_start
        self.stopped_by = "budget"
        self._signalled = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Budget":
        if threading.current_thread() is threading.main_thread():  # signals only work there
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def running(self, step: int) -> bool:
        """Whether to take another step, ``step`` steps having been taken."""
        if self.total_steps is not None and step >= self.total_steps:
            return False
        if self._signalled:
            self.stopped_by = "signal"
            return False
        if self.max_time and time.time() - self.t_start >= self.max_time:
            self.stopped_by = "time"
            return False
        return True

    def more_after(self, step: int) -> bool:
        """Whether a step may follow step ``step`` (so its batch is worth prefetching)."""
        return self.total_steps is None or step + 1 < self.total_steps


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the run described by ``cfg`` in ``cfg.out``."""
    cfg = start(cfg, resume)
    run = Path(cfg.out)
    rank, world = dist_info()
    is_main = rank == 0
    device = pick_device(cfg.device)  # before the data, so a bad flag fails fast
    precision = pick_precision(cfg.precision, device)
    policy = augment.parse_policy(cfg.augment)
    configure(device, cfg.tf32)

    # ---- data ------------------------------------------------------------------------------
    m = cfg.model
    data_path = resolve_dataset(cfg.data, m.res, m.channels, progress=progress and is_main)
    data = open_prepared(data_path)
    sampler = BatchSampler(resident_images(data.images, device, cfg.resident), cfg.batch, cfg.seed, rank, world)
    if sampler.steps_per_epoch == 0:
        raise FaceganError(f"dataset {data_path} has {len(data.images)} images, fewer than one batch of {cfg.batch}; use a smaller --batch")
    budget_steps = [math.ceil(cfg.max_images / (cfg.batch * world))] if cfg.max_images else []
    budget_steps += [math.ceil(cfg.epochs * sampler.steps_per_epoch)] if cfg.epochs else []
    total_steps = min(budget_steps) if budget_steps else None

    # ---- nets, optimisers, random states ---------------------------------------------------
    torch.manual_seed(cfg.seed)
    G, D = build(m)
    G.to(device)
    D.to(device)
    if cfg.channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    opt_g, opt_d = optimizers(G, D, cfg, device)
    # compiled wrappers share G's and D's parameters; checkpoints and sampling use the plain modules
    G_run, D_run = (torch.compile(G, dynamic=False), torch.compile(D, dynamic=False)) if cfg.compile else (G, D)
    ema_decay = ema.schedule(cfg.ema, cfg.ema_kimg, cfg.ema_rampup, cfg.batch * world)
    G_ema = ema.make(G) if ema_decay else None
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)  # latents, label noise, flips, augmentation
    step = 0
    if resume:
        step = _restore(checkpoint.find(run), G, D, G_ema, opt_g, opt_d, gen, device)

    first_step = step
    if is_main:
        write_text_atomic(run / "config.json", json.dumps({**cfg.to_dict(), "dataset": str(data_path),
                                                           "dataset_count": len(data.images), "device": str(device),
                                                           "precision": precision, "world_size": world}, indent=2))
        truncate_metrics(run / "metrics.jsonl", step)

    # ---- the loop ----------------------------------------------------------------------------
    autocast = device_autocast(device, precision)
    B, per_step = cfg.batch, cfg.batch * world
    prefetch = Prefetcher(sampler, device)
    acc = torch.zeros(5, device=device)  # loss_D, loss_G, D(x), D(G(z)), R1 summed since last log
    n_acc, t_start = 0, time.time()
    t_log, step_log = t_start, step
    last_ckpt: Path | None = None
    saved_step = step if resume else -1
    evaluator, best_fid = None, math.inf
    if cfg.eval_every and is_main:
        from facegan.metrics.evaluate import Evaluator  # only runs that evaluate need the metrics extra

        evaluator = Evaluator(data_path, m.res, m.channels, device=device, progress=False)
        best_fid = checkpoint.best_fid(run)
    tb = _tensorboard(run) if cfg.tensorboard and is_main else None
    plain = Stabilisers(cfg.loss, policy)  # the step's options; the lazy-R1 steps add the penalty
    with_r1 = replace(plain, r1_weight=cfg.r1 / 2 * cfg.r1_every)
    bar = tqdm(total=total_steps * per_step if total_steps else None, initial=step * per_step, unit="img",
               unit_scale=True, dynamic_ncols=True, disable=not (progress and is_main), desc=run.name)

    def log() -> None:
        nonlocal n_acc, t_log, step_log, warned
        now = time.time()
        vals = (acc / max(n_acc, 1)).tolist()
        rec = {"step": step, "images": step * per_step, "epoch": step // sampler.steps_per_epoch,
               "loss_D": vals[0], "loss_G": vals[1], "D_x": vals[2], "D_G_z": vals[3],
               **({"r1": vals[4] * cfg.r1_every} if cfg.r1 else {}),  # mean ‖∇D‖² over the R1 steps
               "img_per_s": (step - step_log) * per_step / max(now - t_log, 1e-9), "time": round(now - t_start, 3)}
        if not all(math.isfinite(v) for v in vals):
            good = checkpoint.list_checkpoints(run)
            raise FaceganError(f"training diverged at step {step}: loss_D={vals[0]}, loss_G={vals[1]}; last good "
                               f"checkpoint: {good[-1] if good else 'none'}; try a lower learning rate", exit_code=3)
        if not warned and max(abs(vals[0]), abs(vals[1])) > EXPLODING_LOSS:
            warn(f"loss_D={vals[0]:.3g}, loss_G={vals[1]:.3g} at step {step}: the losses are exploding, so the run is "
                 "probably diverging; try a lower learning rate")
            warned = True
        if is_main:
            append_jsonl(run / "metrics.jsonl", rec)
            if tb is not None:
                for k, v in rec.items():
                    if k not in ("step", "images", "epoch", "time"):
                        tb.add_scalar(f"train/{k}", v, rec["images"])
            if cfg.max_time:  # a time budget: re-estimate the total so the bar shows an ETA
                by_time = step * per_step + int(max(cfg.max_time - (now - t_start), 0) * rec["img_per_s"])
                bar.total = min(by_time, total_steps * per_step) if total_steps else by_time
            bar.update((step - step_log) * per_step)
            bar.set_postfix_str(f"D {vals[0]:.3f} G {vals[1]:.3f} D(x) {vals[2]:.2f} D(G(z)) {vals[3]:.2f} "
                                f"{rec['img_per_s']:.0f} img/s")
        acc.zero_()
        n_acc, t_log, step_log = 0, now, step

    shown_at, warned = -1, False

    def shown() -> Generator:
        """The generator users see: the EMA one (BN statistics recomputed once per step) when on."""
        nonlocal shown_at
        if G_ema is None:
            return G
        if shown_at != step:
            ema.recalibrate_bn(G_ema, seed=cfg.seed + 1000, batch=min(cfg.batch, 128))
            shown_at = step
        return G_ema

    def state() -> tuple[dict, dict]:
        shown()  # checkpoints hold the EMA generator with its BN statistics recomputed
        return _state(step, per_step, cfg, G, D, G_ema, opt_g, opt_d, gen, device)

    def evaluate() -> None:
        """Periodic FID/KID on eval_n faces; the best-FID checkpoint is kept as best.safetensors."""
        nonlocal best_fid
        res = evaluator.of_generator(shown(), cfg.eval_n, names=("fid", "kid"), seed=cfg.seed)
        rec = {"step": step, "images": step * per_step, "fid": res["fid"], "kid_mean": res["kid_mean"],
               "kid_std": res["kid_std"], "eval_n": cfg.eval_n}
        append_jsonl(run / "metrics.jsonl", rec)
        if tb is not None:
            tb.add_scalar("eval/fid", res["fid"], rec["images"])
            tb.add_scalar("eval/kid", res["kid_mean"], rec["images"])
        if res["fid"] < best_fid:
            best_fid = res["fid"]
            tensors, meta = state()
            checkpoint.save_best(run, step, tensors, {**meta, "fid": best_fid})
        bar.write(f"step {step}: FID {res['fid']:.2f} (best {best_fid:.2f}), KID {res['kid_mean']:.4f}")

    def draw() -> None:
        """Fixed-noise grid (faces 0.. of the run's seed), then the curves and animation so far."""
        faces = shown().sample(cfg.grid, seed=cfg.seed)
        viz.save_grid(faces, run / "samples" / f"step-{step:07d}.png")
        if tb is not None:
            tb.add_image("samples", viz.grid(faces), step * per_step, dataformats="HWC")
        viz.update_run_pictures(run)

    def save() -> None:
        nonlocal last_ckpt, saved_step
        if n_acc:
            log()  # checks finiteness first: a diverged state is never written
        if is_main:
            last_ckpt = checkpoint.save(run, step, *state(), keep=cfg.keep)
            draw()
        saved_step = step

    try:
        with Budget(total_steps, cfg.max_time, t_start) as budget:
            while budget.running(step):
                real = to_model_input(prefetch.get(step, budget.more_after(step)), cfg.flip, gen, cfg.channels_last)
                z = torch.randn(B, m.z_dim, generator=gen, device=device)
                targets = loss.d_targets(B, gen, device, cfg.label_smoothing, cfg.label_noise, cfg.label_flip)
                opts = with_r1 if cfg.r1 > 0 and step % cfg.r1_every == 0 else plain
                acc += gan_step(G_run, D_run, opt_g, opt_d, real, z, targets, autocast, opts, gen)
                if G_ema is not None:
                    ema.update(G_ema, G, ema_decay(step))
                n_acc += 1
                step += 1
                if step % cfg.log_every == 0:
                    log()
                if evaluator is not None and is_main and step % cfg.eval_every == 0:
                    evaluate()
                if step % cfg.ckpt_every == 0:
                    save()
                elif is_main and step % cfg.sample_every == 0:
                    draw()
            if step != saved_step:
                save()
    except OSError as e:
        raise disk_error(e, run, "train") from None
    finally:
        prefetch.close()
        bar.close()
        if tb is not None:
            tb.close()
    return TrainResult(run, last_ckpt or (checkpoint.list_checkpoints(run) or [None])[-1], step, step * per_step,
                       time.time() - t_start, budget.stopped_by, first_step, first_step * per_step)


@dataclass(frozen=True)
class Stabilisers:
    """What a step does beyond the classic recipe (see TrainConfig): loss, DiffAugment, R1 weight."""

    loss: str = "bce"
    augment: tuple[str, ...] = ()
    r1_weight: float = 0.0  # γ/2 · r1_every on the steps that apply lazy R1, else 0


def optimizers(G: torch.nn.Module, D: torch.nn.Module, cfg: TrainConfig,
               device: torch.device) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """G's and D's Adam: fused (one kernel for the whole update) on CUDA, foreach elsewhere."""
    fused = device.type == "cuda"
    return tuple(torch.optim.Adam(net.parameters(), lr, betas=(cfg.beta1, cfg.beta2), foreach=not fused, fused=fused)
                 for net, lr in ((G, cfg.lr_g), (D, cfg.lr_d)))


def gan_step(G: torch.nn.Module, D: torch.nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             real: torch.Tensor, z: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor],
             autocast: Any = None, opts: Stabilisers = Stabilisers(), gen: torch.Generator | None = None) -> torch.Tensor:
    """One D update, then one G update on the same fakes; returns [loss_D, loss_G, D(x), D(G(z)), R1].

    D(x), D(G(z)) are mean sigmoid probabilities for the bce loss and mean raw scores otherwise.
    The G step needs gradients through D but not of D's weights, so D's parameters are frozen
    for it: the same update as the reference loop (which computes D's weight gradients there and
    throws them away) for ≈9 % fewer FLOPs. Nothing here reads a value back to the host.
    """
    autocast = autocast or nullcontext()
    aug = (lambda x: augment.diff_augment(x, opts.augment, gen)) if opts.augment else (lambda x: x)
    r1 = opts.r1_weight > 0
    if r1:
        real = real.detach().requires_grad_(True)
    with autocast:
        fake = G(z)
        real_logits, fake_logits = D(aug(real)), D(aug(fake.detach()))
        loss_d = loss.d_loss(real_logits, fake_logits, *targets, kind=opts.loss)
        penalty = loss.r1_penalty(real_logits, real) if r1 else torch.zeros((), device=z.device)
    opt_d.zero_grad(set_to_none=True)
    (loss_d + opts.r1_weight * penalty if r1 else loss_d).backward()
    opt_d.step()
    D.requires_grad_(False)
    try:
        with autocast:
            loss_g = loss.g_loss(D(aug(fake)), kind=opts.loss)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        D.requires_grad_(True)
    opt_g.step()
    with torch.no_grad():
        score = torch.sigmoid if opts.loss == "bce" else (lambda t: t)
        return torch.stack([loss_d.detach(), loss_g.detach(), score(real_logits.detach().float()).mean(),
                            score(fake_logits.detach().float()).mean(), penalty.detach().float()])


def _tensorboard(run: Path) -> Any:
    """A SummaryWriter on RUN/tensorboard (x axis: images seen), or a one-line error without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FaceganError("--tensorboard needs the tensorboard package: pip install 'facegan[tensorboard]'") from None
    return SummaryWriter(str(run / "tensorboard"))


def _state(step: int, per_step: int, cfg: TrainConfig, G: Generator, D: Discriminator, G_ema: Generator | None,
           opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, gen: torch.Generator,
           device: torch.device) -> tuple[dict, dict]:
    """Everything a checkpoint holds: (tensors, JSON meta)."""
    tensors = {f"G.{k}": v for k, v in G.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in D.state_dict().items()})
    if G_ema is not None:
        tensors.update({f"G_ema.{k}": v for k, v in G_ema.state_dict().items()})
    og, groups_g = checkpoint.pack_optimizer("optG", opt_g)
    od, groups_d = checkpoint.pack_optimizer("optD", opt_d)
    tensors.update(og)
    tensors.update(od)
    tensors.update(checkpoint.pack_rng(gen, device))
    meta = {"config": cfg.to_dict(), "images": step * per_step, "optG": groups_g, "optD": groups_d,
            "torch": torch.__version__}
    return tensors, meta


def _restore(path: Path, G: Generator, D: Discriminator, G_ema: Generator | None, opt_g: torch.optim.Optimizer,
             opt_d: torch.optim.Optimizer, gen: torch.Generator, device: torch.device) -> int:
    tensors, meta = checkpoint.load(path)
    G.load_state_dict(checkpoint.module_state(tensors, "G"))
    D.load_state_dict(checkpoint.module_state(tensors, "D"))
    if G_ema is not None:
        G_ema.load_state_dict(checkpoint.module_state(tensors, "G_ema"))
    checkpoint.unpack_optimizer("optG", opt_g, tensors, meta["optG"])
    checkpoint.unpack_optimizer("optD", opt_d, tensors, meta["optD"])
    checkpoint.unpack_rng(tensors, gen, device)
    return int(meta["step"])


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
