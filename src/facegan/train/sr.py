"""Training an upscaler, top to bottom: photos → degraded pairs → L1 (+ features, + critic) → logs, panels, checkpoints.

It keeps every promise of the GAN loop because it uses the same toolbox (train/toolbox.py):
the run folder layout (config.json, metrics.jsonl, samples/step-*.png, progress.gif, curves),
atomic safetensors checkpoints holding everything random, batches that are a pure function of
(seed, step), a graceful stop on Ctrl-C/SIGTERM, a refusal to write a diverged state, and many
ranks under torchrun. So N steps + resume + N steps gives the same weights, bit for bit on CPU,
as 2N steps in one go.

What is different: the low-resolution input is made from each real image as it is drawn
(:func:`degrade`), a fixed slice of the dataset is held out for measuring (:func:`split`), and
the samples are before/after panels of held-out faces: input, bicubic, ours, truth.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facegan import checkpoint, metrics, saved, viz
from facegan.config import BUDGETS, SRTrainConfig
from facegan.data.loader import BatchSampler, Prefetcher, split, to_model_input
from facegan.device import configure
from facegan.dist import ddp, rank_seed, session
from facegan.errors import FaceganError
from facegan.metrics.pixel import psnr_db, upscale_held
from facegan.models.srresnet import SRConfig, SRDiscriminator, SRGenerator, build_sr, downscale
from facegan.train import loss, toolbox
from facegan.train.toolbox import TrainResult

DEFAULT_EPOCHS = 5.0  # the budget of a new run given none (--max-images, --epochs, --max-time)
PANEL = 6  # held-out faces in the sample panels
N_VAL = 64  # held-out faces whose PSNR is logged at every checkpoint


def degrade(hr: torch.Tensor, scale: int, cfg: SRTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """High-resolution batch in [−1, 1] → its low-resolution input, as the model will meet it.

    Antialiased bicubic downscale, then (each optional, strength drawn per image from ``gen``)
    Gaussian blur, Gaussian noise and JPEG, then 8-bit rounding: real inputs are always 8-bit
    files, so training on unrounded floats would teach the net on inputs it never sees.
    """
    x = downscale(hr, scale)
    b, c = x.shape[:2]
    if cfg.blur > 0:
        sigma = cfg.blur * torch.rand(b, generator=gen, device=x.device)
        x = _gaussian_blur(x, sigma.clamp_min(1e-3), radius=max(1, math.ceil(2 * cfg.blur)))
    if cfg.noise > 0:
        sigma = 2 * cfg.noise * torch.rand(b, 1, 1, 1, generator=gen, device=x.device)  # ×2: [−1, 1] spans 2
        x = x + sigma * torch.randn(x.shape, generator=gen, device=x.device)
    x = x.clamp(-1, 1).add(1).mul(127.5).round()
    if cfg.jpeg > 0:
        quality = torch.randint(cfg.jpeg, 96, (b,), generator=gen, device=x.device).tolist()
        x = _jpeg(x, quality)
    return x.div(127.5).sub(1).contiguous(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each image of ``x`` with its own σ: one grouped convolution, reflect padding."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    g = g / g.sum(1, keepdim=True)
    k = (g[:, :, None] * g[:, None, :]).repeat_interleave(c, 0)[:, None]  # (b·c, 1, k, k)
    y = torch.nn.functional.pad(x.reshape(1, b * c, h, w), [radius] * 4, mode="reflect")
    return torch.nn.functional.conv2d(y, k, groups=b * c).reshape(b, c, h, w)


def _jpeg(x: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """Round-trip each image (0..255 floats, NCHW) through a JPEG at its quality, with Pillow."""
    out = []
    for img, q in zip(x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy(), quality):
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=q)
        out.append(np.asarray(Image.open(buf)).reshape(img.shape))
    return torch.from_numpy(np.stack(out)).to(x.device).permute(0, 3, 1, 2).float()


@dataclass(frozen=True)
class Weights:
    """Loss weights of a step (see SRTrainConfig)."""

    l1: float = 1.0
    feature: float = 0.0
    adv: float = 0.0


def sr_step(G: torch.nn.Module, D: torch.nn.Module | None, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer | None,
            lr: torch.Tensor, hr: torch.Tensor, w: Weights, features: torch.nn.Module | None = None,
            D_frozen: torch.nn.Module | None = None) -> torch.Tensor:
    """One update of the critic (when adversarial), then of the upscaler; returns
    [loss, L1, feature loss, loss_D, PSNR of the batch in dB] without reading anything back to the host.

    The critic is frozen during the upscaler's update, as in gan_step: the same gradients for
    fewer FLOPs (through ``D_frozen``, the unwrapped critic, when ``D`` is a DDP module).
    """
    sr = G(lr)
    l1 = (sr - hr).abs().mean()
    total = w.l1 * l1
    zero = torch.zeros((), device=hr.device)
    feat = zero
    if features is not None and w.feature > 0:
        with torch.no_grad():
            target = features(hr)
        feat = (features(sr) - target).abs().mean()
        total = total + w.feature * feat
    loss_d = zero
    if D is not None and w.adv > 0:
        real_logits, fake_logits = D(hr), D(sr.detach())
        ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
        loss_d = loss.d_loss(real_logits, fake_logits, ones, zeros, kind="bce")
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        try:
            total = total + w.adv * loss.g_loss((D if D_frozen is None else D_frozen)(sr), kind="bce")
        finally:
            D.requires_grad_(True)
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    opt_g.step()
    with torch.no_grad():
        batch_psnr = psnr_db(sr.detach().clamp(-1, 1), hr, 2.0, floor=1e-10).mean()  # [−1, 1] spans 2
        return torch.stack([total.detach(), l1.detach(), feat.detach(), loss_d.detach(), batch_psnr])


def train_sr(cfg: SRTrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the upscaler run described by ``cfg`` in ``cfg.out``.

    Flips and degradations are drawn per image from ``gen``, this rank's own stream (rank 0's is
    seeded as a single process's), so each rank degrades its rows differently.
    """
    cfg = toolbox.start(cfg, resume)  # every option and the run folder checked before any work
    out, m, B = Path(cfg.out), cfg.model, cfg.batch
    with session(cfg.device, cfg.dist_timeout) as d:  # join the other ranks (torchrun), or stay alone
        toolbox.check_world(cfg, d)
        device, show = d.device, progress and d.is_main
        configure(device)

        # ---- data: a training split and a held-out split of the same prepared file
        data_path, data = toolbox.dataset(cfg.data, cfg.hr_res, m.channels, d, show)
        train_idx, held_idx = split(len(data.images), cfg.holdout)
        sampler = BatchSampler(data.images, B, cfg.seed, d.rank, d.world, subset=train_idx)
        held = np.asarray(data.images[held_idx[:N_VAL]])

        # ---- nets (each a DDP module when there are several ranks), optimisers, random state
        torch.manual_seed(cfg.seed)
        G, D = build_sr(m)
        if cfg.init and not resume:
            _init_from(G, cfg.init)
        adversarial = cfg.adv > 0
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        G.to(device, memory_format=fmt)
        D.to(device, memory_format=fmt)
        opt_g = torch.optim.Adam(G.parameters(), cfg.lr, betas=(0.9, 0.99))
        opt_d = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=(0.9, 0.99))
        G_run = ddp(G, d)
        D_run = ddp(D, d) if adversarial else None
        features = _feature_net(device) if cfg.feature > 0 else None
        gen = torch.Generator(device).manual_seed(cfg.seed + 1 if d.rank == 0 else rank_seed(cfg.seed, d.rank, "sr"))
        weights = Weights(cfg.l1, cfg.feature, cfg.adv)
        nets = {"SR": G, **({"D": D} if adversarial else {})}
        if d.rank:  # after the nets (the same init everywhere): this rank's own dropout stream
            torch.manual_seed(rank_seed(cfg.seed, d.rank, "torch"))

        # ---- resume: nets and Adams from the last checkpoint; this rank's own streams, ``gen`` among them
        def load(tensors: dict, meta: dict) -> None:
            if meta.get("kind") != checkpoint.UPSCALER:
                raise FaceganError(f"{out} is a GAN run; continue it with facegan train --resume {out}")
            G.load_state_dict(checkpoint.module_state(tensors, "SR"))
            checkpoint.unpack_optimizer("optSR", opt_g, tensors, meta["optSR"])
            if "optD" in meta:
                D.load_state_dict(checkpoint.module_state(tensors, "D"))
                checkpoint.unpack_optimizer("optD", opt_d, tensors, meta["optD"])

        def set_rank_rng(states: dict[str, torch.Tensor]) -> None:
            checkpoint.set_process_rng(states, device)
            checkpoint.unpack_generator(states["gen"], gen, device)

        def reseed(at: int) -> None:
            torch.manual_seed(rank_seed(cfg.seed, d.rank, f"torch/{at}"))
            gen.manual_seed(rank_seed(cfg.seed, d.rank, f"sr/{at}"))

        step = first_step = toolbox.restore(out, d, load, set_rank_rng, reseed) if resume else 0
        d.step = step  # what the heartbeat reports from here on
        total = toolbox.total_steps(cfg, sampler)
        facts = {"dataset": str(data_path), "dataset_count": len(data.images), "kind": checkpoint.UPSCALER,
                 "train_count": len(train_idx), "held_out_count": len(held_idx), "device": str(device), "world_size": d.world}
        d.on_main(lambda: toolbox.write_config(out, cfg, facts, step))  # a failure there (a full disk) stops every rank

        # ---- what the loop writes: checkpoints, before/after panels (collective; rank 0 writes)
        def draw() -> None:
            """Held-out panel (input, bicubic, ours, truth) and the PSNR of N_VAL held-out faces."""
            lr, bic, ours = upscale_held(G, held, m.scale, device)
            p = min(PANEL, len(held))
            nearest = np.repeat(np.repeat(lr[:p], m.scale, 1), m.scale, 2)
            viz.save_grid(np.concatenate([nearest, bic[:p], ours[:p], held[:p]]), out / "samples" / f"step-{step:07d}.png", nrow=p)
            val = {f"psnr_val{suffix}": metrics.compute(["psnr"], metrics.MetricInput(pairs=(x, held)))["psnr"]
                   for suffix, x in (("", ours), ("_bicubic", bic))}
            toolbox.append_jsonl(out / "metrics.jsonl", {"step": step, "images": step * B, **val, "val_n": len(held)})
            viz.update_run_pictures(out)

        def save() -> Path:
            snap = toolbox.snapshot(d, nets, {**checkpoint.process_rng(device), "gen": gen.get_state()},
                                lambda: _state(step, cfg, G, D if adversarial else None, opt_g, opt_d if adversarial else None,
                                               gen, device), step, B)

            def write() -> Path:
                path = checkpoint.save(out, step, *snap, keep=cfg.keep)
                draw()
                return path

            return d.on_main(write)[0]

        def record(v: list[float]) -> tuple[dict[str, float], str]:
            rec = {"loss_G": v[0], "l1": v[1], **({"feature": v[2]} if features is not None else {}),
                   **({"loss_D": v[3]} if adversarial else {}), "psnr": v[4]}
            return rec, f"L1 {v[1]:.4f} PSNR {v[4]:.2f} dB" + (f" D {v[3]:.3f}" if adversarial else "")

        # ---- the loop: degrade a batch, one step, until the budget, the clock or a signal
        prefetch = Prefetcher(sampler, device)
        bar = toolbox.progress_bar(out, total, step, B, show)
        meter = toolbox.Meter(cfg, out, d, bar, None, sampler.steps_per_epoch, step, total)
        saved_step, last_ckpt = (step if resume else -1), None
        try:
            with toolbox.Budget(total, cfg.max_time, meter.t_start, d) as budget:
                while budget.running(step):
                    hr = to_model_input(prefetch.get(step, budget.more_after(step)), cfg.flip, gen, cfg.channels_last)
                    lr = degrade(hr, m.scale, cfg, gen)
                    meter.add(sr_step(G_run, D_run, opt_g, opt_d, lr, hr, weights, features,
                                      D_frozen=D if adversarial else None))
                    step += 1
                    d.step = step  # what the heartbeat reports
                    if step % cfg.log_every == 0:
                        meter.flush(step, record)
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
            raise toolbox.disk_error(e, out, "train-sr") from None
        finally:
            prefetch.close()
            bar.close()
        return TrainResult(out, last_ckpt or (checkpoint.list_checkpoints(out) or [None])[-1], step, step * B,
                           time.time() - meter.t_start, budget.stopped_by, first_step, first_step * B, nets)


def _feature_net(device: torch.device) -> torch.nn.Module:
    """The frozen stem of the FID Inception-v3 (through its 5th conv, 192 maps at ¼ resolution).

    Why this network: the feature ("perceptual") loss of SRGAN uses VGG-19, which cannot be
    downloaded here, while the FID Inception already ships with the metrics extra. Its stem sees
    edges and textures, the level SRGAN found best for sharpness; its deeper layers (object
    parts at 299², far coarser than a 128² face) would only blur the signal.
    """
    from facegan.metrics.inception import InceptionFeatures

    return InceptionFeatures(device=device).stem()


def resolve(**options: Any) -> SRTrainConfig:
    """The upscaler run the options describe (None: not given): SRTrainConfig's defaults, then the
    options (SRConfig's fields go to the model); fine-tuning from ``init`` keeps that run's
    architecture; DEFAULT_EPOCHS when no budget is given."""
    given = {k: v for k, v in options.items() if v is not None}
    model_fields = {f.name for f in fields(SRConfig)}
    try:
        model = SRConfig(**{k: v for k, v in given.items() if k in model_fields})
    except ValueError as e:  # e.g. --scale 3
        raise FaceganError(str(e)) from None
    if given.get("init") is not None:  # fine-tuning keeps the architecture of the run it starts from
        model = init_architecture(given["init"], model.scale)
    if not BUDGETS & given.keys():
        given["epochs"] = DEFAULT_EPOCHS
    return replace(SRTrainConfig(model=model), **{k: v for k, v in given.items() if k not in model_fields})


def init_architecture(init: str | Path, scale: int) -> SRConfig:
    """The architecture a run started from ``--init`` upscaler run INIT has (fine-tuning keeps it),
    checked against the ``--scale`` asked for."""
    model = saved.open(init).upscaler("cpu").cfg
    if model.scale != scale:
        raise FaceganError(f"--init {init} is a ×{model.scale} upscaler; give --scale {model.scale}")
    return model


def _init_from(G: SRGenerator, source: str) -> None:
    """Start from another upscaler run's weights (same architecture required)."""
    init = saved.open(source).upscaler("cpu")
    if init.cfg != G.cfg:
        raise FaceganError(f"--init {source} has architecture {init.cfg.to_dict()}, this run {G.cfg.to_dict()}")
    G.load_state_dict(init.state_dict())


def _state(step: int, cfg: SRTrainConfig, G: SRGenerator, D: SRDiscriminator | None, opt_g: torch.optim.Optimizer,
           opt_d: torch.optim.Optimizer | None, gen: torch.Generator, device: torch.device) -> tuple[dict, dict]:
    """Everything a checkpoint holds: (tensors, JSON meta). The critic only when it is trained."""
    tensors = {f"SR.{k}": v for k, v in G.state_dict().items()}
    og, groups_g = checkpoint.pack_optimizer("optSR", opt_g)
    tensors.update(og)
    meta = {"kind": checkpoint.UPSCALER, "config": cfg.to_dict(), "images": step * cfg.batch, "optSR": groups_g,
            "torch": torch.__version__}
    if D is not None and opt_d is not None:
        tensors.update({f"D.{k}": v for k, v in D.state_dict().items()})
        od, meta["optD"] = checkpoint.pack_optimizer("optD", opt_d)
        tensors.update(od)
    tensors.update(checkpoint.pack_rng(gen, device))
    return tensors, meta
