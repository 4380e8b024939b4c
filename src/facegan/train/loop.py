"""The GAN training loop, top to bottom: options → ranks → data → nets → resume → alternating D/G steps,
with the log, grid, checkpoint and evaluation cadence written inline in :func:`train`.

What both training loops share — the budget and signals, the averaged log, checkpoints holding
every rank's random state, the run folder — are plain functions in train/toolbox.py.

Random streams (so N steps + resume + N steps gives the same weights, bit for bit on CPU):
- ``gen`` draws everything that defines a global batch — latents, D's targets, flips, DiffAugment
  parameters — for all ``--batch`` rows on every rank; each rank keeps its own rows. So the ranks
  get different fakes, and K ranks compute what one process does at the same batch (up to
  BatchNorm's per-rank statistics);
- torch's global stream (dropout) is this rank's own, seeded from (seed, rank) and checkpointed
  for every rank;
- the init comes from the seed alone: every rank builds the same nets.
No host↔device synchronisation happens inside a step.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from facegan import checkpoint, metrics, viz
from facegan.config import TrainConfig
from facegan.data.loader import BatchSampler, Prefetcher, to_model_input
from facegan.device import autocast as device_autocast
from facegan.device import configure, pick_precision, resident_images
from facegan.dist import ddp, rank_seed, session
from facegan.errors import FaceganError
from facegan.models import efficientnet_lite
from facegan.models.dcgan import Generator, build
from facegan.train import augment, ema, loss, toolbox
from facegan.train.toolbox import TrainResult


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the GAN run described by ``cfg`` in ``cfg.out``."""
    cfg = toolbox.start(cfg, resume)  # every option and the run folder checked before any work
    out, m, B = Path(cfg.out), cfg.model, cfg.batch
    with session(cfg.device, cfg.dist_timeout) as d:  # join the other ranks (torchrun), or stay alone
        toolbox.check_world(cfg, d)
        device, show, (lo, hi) = d.device, progress and d.is_main, toolbox.rows(B, d)
        tb = toolbox.tensorboard(out, cfg.tensorboard, d)
        try:
            # ---- device: precision, TF32
            precision = pick_precision(cfg.precision, device)
            configure(device, cfg.tf32)
            autocast = device_autocast(device, precision)

            # ---- data: this rank's rows of each global batch
            data_path, data = toolbox.dataset(cfg.data, m.res, m.channels, d, show)
            sampler = BatchSampler(resident_images(data.images, device, cfg.resident), B, cfg.seed, d.rank, d.world)

            # ---- nets, optimisers, random streams (the init comes from the seed: every rank builds the same nets)
            torch.manual_seed(cfg.seed)
            G, D = build(m)
            for net in (G, D):
                net.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
            ema_decay = ema.schedule(cfg.ema, cfg.ema_kimg, cfg.ema_rampup, B)
            G_ema = ema.make(G) if ema_decay else None
            opt_g, opt_d = optimizers(G, D, cfg, device)
            if cfg.sync_bn:  # in place (the same G and D objects), after the EMA copy, which only samples
                for net in (G, D):
                    torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            # DDP and compiled wrappers share G's and D's parameters; checkpoints and sampling use the plain modules
            wrap = (lambda n: torch.compile(n, dynamic=False)) if cfg.compile else (lambda n: n)
            G_run, D_run = wrap(ddp(G, d)), wrap(ddp(D, d))
            D_frozen = wrap(D) if d.active else D_run  # G's step: no all-reduce of D's unused grads
            gen = torch.Generator(device).manual_seed(cfg.seed + 1)  # everything drawn per global batch
            plain = Stabilisers(cfg.loss, augment.parse_policy(cfg.augment))
            with_r1 = replace(plain, r1_weight=cfg.r1 / 2 * cfg.r1_every)  # the lazy-R1 steps
            nets = {"G": G, "D": D}
            shown_at = -1

            def shown(step: int) -> Generator:
                """The generator users see: the EMA one (BN statistics recomputed once per step) when on."""
                nonlocal shown_at
                if G_ema is None:
                    return G
                if shown_at != step:
                    ema.recalibrate_bn(G_ema, seed=cfg.seed + 1000, batch=min(B, 128))
                    shown_at = step
                return G_ema

            if d.rank:  # after the nets (the same init everywhere): this rank's own dropout stream
                torch.manual_seed(rank_seed(cfg.seed, d.rank, "torch"))

            # ---- resume: nets, Adams and the shared stream from the last checkpoint, this rank's own streams
            def load(tensors: dict, meta: dict) -> None:
                if m.d_arch == "projected" and meta.get("d_features") != efficientnet_lite.ID:
                    raise FaceganError(f"this run's discriminator was trained on feature weights {meta.get('d_features')!r}, "
                                       f"not the installed {efficientnet_lite.ID!r}; it cannot continue with other features")
                for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
                    if net is not None:
                        net.load_state_dict(checkpoint.module_state(tensors, name))
                checkpoint.unpack_optimizer("optG", opt_g, tensors, meta["optG"])
                checkpoint.unpack_optimizer("optD", opt_d, tensors, meta["optD"])
                checkpoint.unpack_generator(tensors["rng.gen"], gen, device)  # shared; the rest is per rank

            step = first_step = toolbox.restore(out, d, load, lambda s: checkpoint.set_process_rng(s, device),
                                            lambda at: torch.manual_seed(rank_seed(cfg.seed, d.rank, f"torch/{at}"))) if resume else 0
            d.step = step  # what the heartbeat reports from here on
            evaluator, best, eval_names = None, math.inf, metrics.parse(cfg.eval_metrics)
            if cfg.eval_every:
                from facegan.metrics.evaluate import Evaluator  # only runs that evaluate need the metrics extra

                evaluator = Evaluator(data_path, m.res, m.channels, device=device, progress=False, dist=d)
                best = checkpoint.best_fid(out)
            total = toolbox.total_steps(cfg, sampler)
            facts = {"dataset": str(data_path), "dataset_count": len(data.images), "precision": precision,
                     "device": str(device), "world_size": d.world}
            d.on_main(lambda: toolbox.write_config(out, cfg, facts, step))  # a failure there (a full disk) stops every rank

            # ---- what the loop writes: checkpoints, pictures, evaluations (collective; rank 0 writes)
            def snapshot(extra: dict[str, Any] | None = None) -> tuple[dict, dict] | None:
                def state() -> tuple[dict, dict]:
                    shown(step)  # checkpoints hold the EMA generator with its BN statistics recomputed
                    tensors, meta = _state(step, B, cfg, G, D, G_ema, opt_g, opt_d, gen, device)
                    return tensors, {**meta, **(extra or {})}

                also = {"G_ema": list(G_ema.parameters())} if G_ema is not None else None  # its BN stats: rank 0's
                return toolbox.snapshot(d, nets, checkpoint.process_rng(device), state, step, B, also)

            def draw() -> None:
                """Fixed-noise grid (faces 0.. of the run's seed), then the curves and animation so far."""
                faces = shown(step).sample(cfg.grid, seed=cfg.seed)
                viz.save_grid(faces, out / "samples" / f"step-{step:07d}.png")
                if tb is not None:
                    tb.add_image("samples", viz.grid(faces), step * B, dataformats="HWC")
                viz.update_run_pictures(out)

            def save() -> Path:
                snap = snapshot()

                def write() -> Path:
                    path = checkpoint.save(out, step, *snap, keep=cfg.keep)
                    draw()
                    return path

                return d.on_main(write)[0]

            def evaluate() -> None:
                """``eval_metrics`` of eval_n faces (Inception batches shared over the ranks); the best FID kept."""
                nonlocal best
                d.sync_buffers(nets.values())  # without EMA the faces come from G's BN statistics
                res = evaluator.of_generator(shown(step), cfg.eval_n, names=eval_names, seed=cfg.seed)
                scores = {k: v for k, v in res.items() if k not in ("n_real", "n_fake", "seconds_metrics")}
                rec = {"step": step, "images": step * B, **scores, "eval_n": cfg.eval_n}
                d.on_main(lambda: _write_eval(out, tb, rec))
                if d.agree_max(int(res["fid"] < best)):  # one decision for all ranks: saving is collective
                    best = min(best, res["fid"])
                    snap = snapshot({"fid": best})
                    d.on_main(lambda: checkpoint.save_best(out, step, *snap))
                if show:
                    more = "".join(f", {k} {v:.4g}" for k, v in scores.items() if k != "fid")
                    tqdm.write(f"step {step}: FID {res['fid']:.2f} (best {best:.2f}){more}")

            def record(v: list[float]) -> tuple[dict[str, float], str]:
                rec = {"loss_D": v[0], "loss_G": v[1], "D_x": v[2], "D_G_z": v[3],
                       **({"r1": v[4] * cfg.r1_every} if cfg.r1 else {})}  # mean ‖∇D‖² over the R1 steps
                return rec, f"D {v[0]:.3f} G {v[1]:.3f} D(x) {v[2]:.2f} D(G(z)) {v[3]:.2f}"

            # ---- the loop: one D step and one G step per global batch, until the budget, the clock or a signal
            prefetch = Prefetcher(sampler, device)
            bar = toolbox.progress_bar(out, total, step, B, show)
            meter = toolbox.Meter(cfg, out, d, bar, tb, sampler.steps_per_epoch, step, total)
            saved_step, last_ckpt = (step if resume else -1), None
            try:
                with toolbox.Budget(total, cfg.max_time, meter.t_start, d) as budget:
                    while budget.running(step):
                        real = to_model_input(prefetch.get(step, budget.more_after(step)), cfg.flip, gen, cfg.channels_last,
                                              rows=(lo, B))
                        z = torch.randn(B, m.z_dim, generator=gen, device=device)[lo:hi]
                        targets = tuple(t[lo:hi] for t in loss.d_targets(B, gen, device, cfg.label_smoothing,
                                                                          cfg.label_noise, cfg.label_flip))
                        opts = with_r1 if cfg.r1 > 0 and step % cfg.r1_every == 0 else plain
                        meter.add(gan_step(G_run, D_run, opt_g, opt_d, real, z, targets, autocast, opts,
                                           augment.Rows(gen, lo, B), D_frozen=D_frozen))
                        if G_ema is not None:
                            ema.update(G_ema, G, ema_decay(step))
                        step += 1
                        d.step = step  # what the heartbeat reports
                        if step % cfg.log_every == 0:
                            meter.flush(step, record)
                        if evaluator is not None and step % cfg.eval_every == 0:
                            evaluate()
                        if step % cfg.ckpt_every == 0:
                            meter.flush(step, record)  # checks finiteness first: a diverged state is never written
                            last_ckpt, saved_step = save(), step
                        elif step % cfg.sample_every == 0:
                            d.sync_buffers(nets.values())  # what rank 0 draws is what every rank holds
                            d.on_main(draw)
                    if step != saved_step:
                        meter.flush(step, record)
                        last_ckpt, saved_step = save(), step
            except OSError as e:
                raise toolbox.disk_error(e, out, "train") from None
            finally:
                prefetch.close()
                bar.close()
            return TrainResult(out, last_ckpt or (checkpoint.list_checkpoints(out) or [None])[-1], step, step * B,
                               time.time() - meter.t_start, budget.stopped_by, first_step, first_step * B, nets)
        finally:
            if tb is not None:
                tb.close()


def _write_eval(out: Path, tb: Any, rec: dict[str, Any]) -> None:
    toolbox.append_jsonl(out / "metrics.jsonl", rec)
    if tb is not None:
        for k, v in rec.items():
            if k not in ("step", "images", "eval_n"):
                tb.add_scalar(f"eval/{'kid' if k == 'kid_mean' else k}", v, rec["images"])


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
             autocast: Any = None, opts: Stabilisers = Stabilisers(), gen: augment.Draws = None,
             D_frozen: torch.nn.Module | None = None) -> torch.Tensor:
    """One D update, then one G update on the same fakes; returns [loss_D, loss_G, D(x), D(G(z)), R1].

    D(x), D(G(z)) are mean sigmoid probabilities for the bce loss and mean raw scores otherwise.
    The G step needs gradients through D but not of D's weights, so D's parameters are frozen
    for it: the same update as the reference loop (which computes D's weight gradients there and
    throws them away) for ≈9 % fewer FLOPs. ``D_frozen`` is the D to use there when ``D`` is a DDP
    module (D's own, unwrapped): DDP would otherwise wait for D gradients that never come. Nothing
    here reads a value back to the host.
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
            loss_g = loss.g_loss((D if D_frozen is None else D_frozen)(aug(fake)), kind=opts.loss)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        D.requires_grad_(True)
    opt_g.step()
    with torch.no_grad():
        score = torch.sigmoid if opts.loss == "bce" else (lambda t: t)
        return torch.stack([loss_d.detach(), loss_g.detach(), score(real_logits.detach().float()).mean(),
                            score(fake_logits.detach().float()).mean(), penalty.detach().float()])


def _state(step: int, per_step: int, cfg: TrainConfig, G: Generator, D: torch.nn.Module, G_ema: Generator | None,
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
    if cfg.model.d_arch == "projected":  # D's frozen features are not in the file: name the weights it needs
        meta["d_features"] = efficientnet_lite.ID
    return tensors, meta
