"""The GAN training loop, top to bottom: data → nets → alternating D/G steps → grids and FID.

Everything around the step — budgets, signals, logs, checkpoints, resume, many ranks — is the
run harness's (train/harness.py); this file says what a GAN step is and what its run holds.

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

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm import tqdm

from facegan import checkpoint, metrics, viz
from facegan.config import TrainConfig
from facegan.data.loader import BatchSampler, to_model_input
from facegan.device import autocast as device_autocast
from facegan.device import configure, pick_precision, resident_images
from facegan.dist import ddp
from facegan.errors import FaceganError
from facegan.models import efficientnet_lite
from facegan.models.dcgan import Generator, build
from facegan.train import augment, ema, loss
from facegan.train.harness import Harness, TrainResult, Trainer, append_jsonl


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the GAN run described by ``cfg`` in ``cfg.out``."""
    return Harness(cfg, resume, progress).run(GANTrainer)


class GANTrainer(Trainer):
    """G, D (each its own DDP module when there are several ranks), their Adams, an optional EMA G."""

    command = "train"

    def __init__(self, h: Harness) -> None:
        cfg, d, m = h.cfg, h.dist, h.cfg.model
        self.h, self.cfg, device = h, cfg, h.device
        self.precision = pick_precision(cfg.precision, device)
        configure(device, cfg.tf32)
        # ---- data: this rank's rows of each global batch
        self.data_path, data = h.dataset(m.res, m.channels)
        self.sampler = BatchSampler(resident_images(data.images, device, cfg.resident), cfg.batch, cfg.seed, d.rank, d.world)
        # ---- nets, optimisers, random streams
        torch.manual_seed(cfg.seed)
        self.G, self.D = G, D = build(m)
        for net in (G, D):
            net.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
        self.ema_decay = ema.schedule(cfg.ema, cfg.ema_kimg, cfg.ema_rampup, cfg.batch)
        self.G_ema = ema.make(G) if self.ema_decay else None
        self.opt_g, self.opt_d = optimizers(G, D, cfg, device)
        if cfg.sync_bn:  # in place (the same G and D objects), after the EMA copy, which only samples
            for net in (G, D):
                torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # DDP and compiled wrappers share G's and D's parameters; checkpoints and sampling use the plain modules
        wrap = (lambda n: torch.compile(n, dynamic=False)) if cfg.compile else (lambda n: n)
        self.G_run, self.D_run = wrap(ddp(G, d)), wrap(ddp(D, d))
        self.D_frozen = wrap(D) if d.active else self.D_run  # G's step: no all-reduce of D's unused grads
        self.gen = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.autocast = device_autocast(device, self.precision)
        self.plain = Stabilisers(cfg.loss, augment.parse_policy(cfg.augment))
        self.with_r1 = replace(self.plain, r1_weight=cfg.r1 / 2 * cfg.r1_every)  # the lazy-R1 steps
        self.shown_at = -1
        self.evaluate = PeriodicFID(self) if cfg.eval_every else None

    def step(self, step: int, batch_u8: torch.Tensor) -> torch.Tensor:
        cfg, B, (lo, hi), device = self.cfg, self.cfg.batch, self.h.rows, self.h.device
        real = to_model_input(batch_u8, cfg.flip, self.gen, cfg.channels_last, rows=(lo, B))
        z = torch.randn(B, cfg.model.z_dim, generator=self.gen, device=device)[lo:hi]
        targets = tuple(t[lo:hi] for t in loss.d_targets(B, self.gen, device, cfg.label_smoothing, cfg.label_noise,
                                                          cfg.label_flip))
        opts = self.with_r1 if cfg.r1 > 0 and step % cfg.r1_every == 0 else self.plain
        stats = gan_step(self.G_run, self.D_run, self.opt_g, self.opt_d, real, z, targets, self.autocast, opts,
                         augment.Rows(self.gen, lo, B), D_frozen=self.D_frozen)
        if self.G_ema is not None:
            ema.update(self.G_ema, self.G, self.ema_decay(step))
        return stats

    def record(self, v: list[float]) -> tuple[dict[str, float], str]:
        rec = {"loss_D": v[0], "loss_G": v[1], "D_x": v[2], "D_G_z": v[3],
               **({"r1": v[4] * self.cfg.r1_every} if self.cfg.r1 else {})}  # mean ‖∇D‖² over the R1 steps
        return rec, f"D {v[0]:.3f} G {v[1]:.3f} D(x) {v[2]:.2f} D(G(z)) {v[3]:.2f}"

    def shown(self) -> Generator:
        """The generator users see: the EMA one (BN statistics recomputed once per step) when on."""
        if self.G_ema is None:
            return self.G
        if self.shown_at != self.h.step:
            ema.recalibrate_bn(self.G_ema, seed=self.cfg.seed + 1000, batch=min(self.cfg.batch, 128))
            self.shown_at = self.h.step
        return self.G_ema

    def nets(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D}

    def weights(self) -> dict[str, list[torch.Tensor]]:
        ema_params = {"G_ema": list(self.G_ema.parameters())} if self.G_ema is not None else {}
        return {**super().weights(), **ema_params}  # G_ema's BN statistics are recomputed on rank 0 only

    def state(self) -> tuple[dict, dict]:
        self.shown()  # checkpoints hold the EMA generator with its BN statistics recomputed
        return _state(self.h.step, self.cfg.batch, self.cfg, self.G, self.D, self.G_ema, self.opt_g, self.opt_d, self.gen,
                      self.h.device)

    def restore(self, tensors: dict, meta: dict) -> None:
        if self.cfg.model.d_arch == "projected" and meta.get("d_features") != efficientnet_lite.ID:
            raise FaceganError(f"this run's discriminator was trained on feature weights {meta.get('d_features')!r}, "
                               f"not the installed {efficientnet_lite.ID!r}; it cannot continue with other features")
        for name, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            if net is not None:
                net.load_state_dict(checkpoint.module_state(tensors, name))
        checkpoint.unpack_optimizer("optG", self.opt_g, tensors, meta["optG"])
        checkpoint.unpack_optimizer("optD", self.opt_d, tensors, meta["optD"])
        checkpoint.unpack_generator(tensors["rng.gen"], self.gen, self.h.device)  # shared; the rest is per rank

    def after_step(self, step: int) -> None:
        if self.evaluate is not None and step % self.cfg.eval_every == 0:
            self.h.dist.sync_buffers(self.nets().values())  # without EMA the faces come from G's BN statistics
            self.evaluate(step)

    def draw(self, step: int) -> None:
        """Fixed-noise grid (faces 0.. of the run's seed), then the curves and animation so far."""
        faces = self.shown().sample(self.cfg.grid, seed=self.cfg.seed)
        viz.save_grid(faces, self.h.run_dir / "samples" / f"step-{step:07d}.png")
        if self.h.tb is not None:
            self.h.tb.add_image("samples", viz.grid(faces), step * self.cfg.batch, dataformats="HWC")
        viz.update_run_pictures(self.h.run_dir)

    def info(self) -> dict[str, Any]:
        return {"precision": self.precision}


class PeriodicFID:
    """``eval_metrics`` (FID, KID by default) of eval_n faces every eval_every steps (Inception batches
    shared over the ranks); the best-FID state is kept as checkpoints/best.safetensors."""

    def __init__(self, t: GANTrainer) -> None:
        from facegan.metrics.evaluate import Evaluator  # only runs that evaluate need the metrics extra

        m = t.cfg.model
        self.t = t
        self.evaluator = Evaluator(t.data_path, m.res, m.channels, device=t.h.device, progress=False, dist=t.h.dist)
        self.best = checkpoint.best_fid(t.h.run_dir)
        self.names = metrics.parse(t.cfg.eval_metrics)

    def __call__(self, step: int) -> None:
        t, h, cfg = self.t, self.t.h, self.t.cfg
        res = self.evaluator.of_generator(t.shown(), cfg.eval_n, names=self.names, seed=cfg.seed)
        scores = {k: v for k, v in res.items() if k not in ("n_real", "n_fake", "seconds_metrics")}
        rec = {"step": step, "images": step * cfg.batch, **scores, "eval_n": cfg.eval_n}
        h.dist.on_main(lambda: self.write(rec))
        if h.dist.agree_max(int(res["fid"] < self.best)):  # one decision for all ranks: saving is collective
            self.best = min(self.best, res["fid"])
            h.save_best(t, {"fid": self.best})
        if h.progress:
            more = "".join(f", {k} {v:.4g}" for k, v in scores.items() if k != "fid")
            tqdm.write(f"step {step}: FID {res['fid']:.2f} (best {self.best:.2f}){more}")

    def write(self, rec: dict[str, Any]) -> None:
        h = self.t.h
        append_jsonl(h.run_dir / "metrics.jsonl", rec)
        if h.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "images", "eval_n"):
                    h.tb.add_scalar(f"eval/{'kid' if k == 'kid_mean' else k}", v, rec["images"])


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
