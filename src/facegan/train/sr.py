"""Training an upscaler, top to bottom: photos → degraded pairs → L1 (+ features, + critic) → logs, panels, checkpoints.

It keeps every promise of the GAN trainer (train/loop.py), with the same machinery: the run
folder layout (config.json, metrics.jsonl, samples/step-*.png, progress.gif, curves), atomic
safetensors checkpoints holding everything random, batches that are a pure function of
(seed, step), a graceful stop on Ctrl-C/SIGTERM and a refusal to write a diverged state. So N
steps + resume + N steps gives the same weights, bit for bit on CPU, as 2N steps in one go.

What is different: the low-resolution input is made from each real image as it is drawn
(:func:`degrade`), a fixed slice of the dataset is held out for measuring (:func:`split`), and
the samples are before/after panels of held-out faces: input, bicubic, ours, truth.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from facegan import checkpoint, viz
from facegan.config import SRTrainConfig
from facegan.data.loader import BatchSampler, Prefetcher, to_model_input
from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.device import configure, pick_device
from facegan.errors import FaceganError
from facegan.metrics.pixel import psnr
from facegan.models.dcgan import to_uint8
from facegan.models.srresnet import SRConfig, SRDiscriminator, SRGenerator, bicubic, build_sr, downscale
from facegan.train import loss
from facegan.fileio import write_text_atomic
from facegan.train.loop import Budget, TrainResult, append_jsonl, disk_error, start, truncate_metrics

PANEL = 6  # held-out faces in the sample panels
N_VAL = 64  # held-out faces whose PSNR is logged at every checkpoint


def split(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) dataset indices: every ``holdout``-th image (0, k, 2k, …) is held out."""
    held = np.arange(0, n, holdout)
    return np.setdiff1d(np.arange(n), held), held


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


def sr_step(G: SRGenerator, D: SRDiscriminator | None, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer | None,
            lr: torch.Tensor, hr: torch.Tensor, w: Weights, features: torch.nn.Module | None = None) -> torch.Tensor:
    """One update of the critic (when adversarial), then of the upscaler; returns
    [loss, L1, feature loss, loss_D, PSNR of the batch in dB] without reading anything back to the host.

    The critic is frozen during the upscaler's update, as in gan_step: the same gradients for
    fewer FLOPs.
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
            total = total + w.adv * loss.g_loss(D(sr), kind="bce")
        finally:
            D.requires_grad_(True)
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    opt_g.step()
    with torch.no_grad():
        mse = (sr.detach().clamp(-1, 1) - hr).pow(2).flatten(1).mean(1)
        batch_psnr = (10 * torch.log10(4.0 / mse.clamp_min(1e-10))).mean()  # [−1, 1] spans 2: peak² = 4
        return torch.stack([total.detach(), l1.detach(), feat.detach(), loss_d.detach(), batch_psnr])


def train_sr(cfg: SRTrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the upscaler run described by ``cfg`` in ``cfg.out``."""
    cfg = start(cfg, resume)
    run = Path(cfg.out)
    m = cfg.model
    device = pick_device(cfg.device)
    configure(device)

    # ---- data: a training split and a held-out split of the same prepared file ------------------
    data_path = resolve_dataset(cfg.data, cfg.hr_res, m.channels, progress=progress)
    data = open_prepared(data_path)
    train_idx, held_idx = split(len(data.images), cfg.holdout)
    sampler = BatchSampler(data.images, cfg.batch, cfg.seed, subset=train_idx)
    if sampler.steps_per_epoch == 0:
        raise FaceganError(f"{data_path} has {len(train_idx)} training images, fewer than one batch of {cfg.batch}; use a smaller --batch")
    budget_steps = [math.ceil(cfg.max_images / cfg.batch)] if cfg.max_images else []
    budget_steps += [math.ceil(cfg.epochs * sampler.steps_per_epoch)] if cfg.epochs else []
    total_steps = min(budget_steps) if budget_steps else None
    held = np.asarray(data.images[held_idx[:N_VAL]])

    # ---- nets, optimisers, random state --------------------------------------------------------
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
    features = _feature_net(device) if cfg.feature > 0 else None
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)  # flips and degradations
    step = first_step = _restore(checkpoint.find(run), G, D, opt_g, opt_d, gen, device) if resume else 0
    write_text_atomic(run / "config.json", json.dumps({**cfg.to_dict(), "kind": checkpoint.UPSCALER, "dataset": str(data_path),
                                                       "dataset_count": len(data.images), "train_count": len(train_idx),
                                                       "held_out_count": len(held_idx), "device": str(device)}, indent=2))
    truncate_metrics(run / "metrics.jsonl", step)

    # ---- the loop --------------------------------------------------------------------------------
    weights = Weights(cfg.l1, cfg.feature, cfg.adv)
    prefetch = Prefetcher(sampler, device)
    acc, n_acc = torch.zeros(5, device=device), 0
    t_start = time.time()
    t_log, step_log, saved_step, last_ckpt = t_start, step, (step if resume else -1), None
    bar = tqdm(total=total_steps * cfg.batch if total_steps else None, initial=step * cfg.batch, unit="img",
               unit_scale=True, dynamic_ncols=True, disable=not progress, desc=run.name)

    def log() -> None:
        nonlocal n_acc, t_log, step_log
        now = time.time()
        v = (acc / max(n_acc, 1)).tolist()
        rec = {"step": step, "images": step * cfg.batch, "epoch": step // sampler.steps_per_epoch,
               "loss_G": v[0], "l1": v[1], **({"feature": v[2]} if features is not None else {}),
               **({"loss_D": v[3]} if adversarial else {}), "psnr": v[4],
               "img_per_s": (step - step_log) * cfg.batch / max(now - t_log, 1e-9), "time": round(now - t_start, 3)}
        if not all(math.isfinite(x) for x in v[:4]):
            good = checkpoint.list_checkpoints(run)
            raise FaceganError(f"training diverged at step {step}: loss={v[0]}; last good checkpoint: "
                               f"{good[-1] if good else 'none'}; try a lower --lr", exit_code=3)
        append_jsonl(run / "metrics.jsonl", rec)
        if cfg.max_time:
            by_time = step * cfg.batch + int(max(cfg.max_time - (now - t_start), 0) * rec["img_per_s"])
            bar.total = min(by_time, total_steps * cfg.batch) if total_steps else by_time
        bar.update((step - step_log) * cfg.batch)
        bar.set_postfix_str(f"L1 {v[1]:.4f} PSNR {v[4]:.2f} dB" + (f" D {v[3]:.3f}" if adversarial else "")
                            + f" {rec['img_per_s']:.1f} img/s")
        acc.zero_()
        n_acc, t_log, step_log = 0, now, step

    def draw() -> None:
        """Held-out panel (input, bicubic, ours, truth) and the PSNR of N_VAL held-out faces."""
        lr, bic, ours = upscale_held(G, held, cfg.model.scale, device)
        p = min(PANEL, len(held))
        nearest = np.repeat(np.repeat(lr[:p], m.scale, 1), m.scale, 2)
        viz.save_grid(np.concatenate([nearest, bic[:p], ours[:p], held[:p]]), run / "samples" / f"step-{step:07d}.png", nrow=p)
        append_jsonl(run / "metrics.jsonl", {"step": step, "images": step * cfg.batch, "psnr_val": float(psnr(ours, held).mean()),
                                             "psnr_val_bicubic": float(psnr(bic, held).mean()), "val_n": len(held)})
        viz.update_run_pictures(run)

    def save() -> None:
        nonlocal last_ckpt, saved_step
        if n_acc:
            log()
        last_ckpt = checkpoint.save(run, step, *_state(step, cfg, G, D if adversarial else None, opt_g,
                                                       opt_d if adversarial else None, gen, device), keep=cfg.keep)
        draw()
        saved_step = step

    try:
        with Budget(total_steps, cfg.max_time, t_start) as budget:
            while budget.running(step):
                hr = to_model_input(prefetch.get(step, budget.more_after(step)), cfg.flip, gen, cfg.channels_last)
                lr = degrade(hr, m.scale, cfg, gen)
                acc += sr_step(G, D if adversarial else None, opt_g, opt_d, lr, hr, weights, features)
                n_acc += 1
                step += 1
                if step % cfg.log_every == 0:
                    log()
                if step % cfg.ckpt_every == 0:
                    save()
                elif step % cfg.sample_every == 0:
                    draw()
            if step != saved_step:
                save()
    except OSError as e:
        raise disk_error(e, run, "train-sr") from None
    finally:
        prefetch.close()
        bar.close()
    return TrainResult(run, last_ckpt or (checkpoint.list_checkpoints(run) or [None])[-1], step, step * cfg.batch,
                       time.time() - t_start, budget.stopped_by, first_step, first_step * cfg.batch)


@torch.no_grad()
def upscale_held(G: SRGenerator, hr: np.ndarray, scale: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean 8-bit input, bicubic, ours) for held-out uint8 images: the standard SR protocol."""
    lr_u8 = to_uint8(downscale(to_model_input(torch.from_numpy(hr).to(device)), scale))
    return lr_u8, to_uint8(bicubic(to_model_input(torch.from_numpy(lr_u8).to(device)), scale)), G.upscale(lr_u8)


def _feature_net(device: torch.device) -> torch.nn.Module:
    """The frozen stem of the FID Inception-v3 (through its 5th conv, 192 maps at ¼ resolution).

    Why this network: the feature ("perceptual") loss of SRGAN uses VGG-19, which cannot be
    downloaded here, while the FID Inception already ships with the metrics extra. Its stem sees
    edges and textures, the level SRGAN found best for sharpness; its deeper layers (object
    parts at 299², far coarser than a 128² face) would only blur the signal.
    """
    from facegan.metrics.inception import InceptionFeatures

    return InceptionFeatures(device=device).stem()


def load_sr(source: str | Path) -> tuple[dict[str, torch.Tensor], dict, SRConfig]:
    """(tensors, meta, architecture) of an upscaler checkpoint or run; a one-line error for a GAN run."""
    tensors, meta = checkpoint.load(source)
    if meta.get("kind") != checkpoint.UPSCALER:
        raise FaceganError(f"{source} is a GAN run, not an upscaler; train one with: facegan train-sr DATA --out SRRUN")
    return tensors, meta, SRConfig.from_dict(meta["config"]["model"])


def _init_from(G: SRGenerator, source: str) -> None:
    """Start from another upscaler run's weights (same architecture required)."""
    tensors, _, arch = load_sr(source)
    if arch != G.cfg:
        raise FaceganError(f"--init {source} has architecture {arch.to_dict()}, this run {G.cfg.to_dict()}")
    G.load_state_dict(checkpoint.module_state(tensors, "SR"))


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


def _restore(path: Path, G: SRGenerator, D: SRDiscriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             gen: torch.Generator, device: torch.device) -> int:
    tensors, meta, _ = load_sr(path)
    G.load_state_dict(checkpoint.module_state(tensors, "SR"))
    checkpoint.unpack_optimizer("optSR", opt_g, tensors, meta["optSR"])
    if "optD" in meta:
        D.load_state_dict(checkpoint.module_state(tensors, "D"))
        checkpoint.unpack_optimizer("optD", opt_d, tensors, meta["optD"])
    checkpoint.unpack_rng(tensors, gen, device)
    return int(meta["step"])
