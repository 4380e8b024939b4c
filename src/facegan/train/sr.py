"""Training an upscaler, top to bottom: photos → degraded pairs → L1 (+ features, + critic) → logs, panels, checkpoints.

It keeps every promise of the GAN trainer because it runs in the same harness (train/harness.py):
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facegan import checkpoint, viz
from facegan.config import SRTrainConfig
from facegan.data.loader import BatchSampler, to_model_input
from facegan.device import configure
from facegan.dist import ddp, rank_seed
from facegan.errors import FaceganError
from facegan.metrics.pixel import psnr
from facegan.models.dcgan import to_uint8
from facegan.models.srresnet import SRConfig, SRDiscriminator, SRGenerator, bicubic, build_sr, downscale
from facegan.train import loss
from facegan.train.harness import Harness, TrainResult, Trainer, append_jsonl

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
        mse = (sr.detach().clamp(-1, 1) - hr).pow(2).flatten(1).mean(1)
        batch_psnr = (10 * torch.log10(4.0 / mse.clamp_min(1e-10))).mean()  # [−1, 1] spans 2: peak² = 4
        return torch.stack([total.detach(), l1.detach(), feat.detach(), loss_d.detach(), batch_psnr])


def train_sr(cfg: SRTrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the upscaler run described by ``cfg`` in ``cfg.out``."""
    return Harness(cfg, resume, progress).run(SRTrainer)


class SRTrainer(Trainer):
    """The upscaler (and, when adversarial, its critic), each a DDP module when there are several ranks.

    Flips and degradations are drawn per image from ``gen``, this rank's own stream (rank 0's is
    seeded as a single process's), so each rank degrades its rows differently.
    """

    command = "train-sr"

    def __init__(self, h: Harness) -> None:
        cfg, d, m = h.cfg, h.dist, h.cfg.model
        self.h, self.cfg, device = h, cfg, h.device
        configure(device)
        # ---- data: a training split and a held-out split of the same prepared file
        _, data = h.dataset(cfg.hr_res, m.channels)
        self.train_idx, held_idx = split(len(data.images), cfg.holdout)
        self.counts = {"train_count": len(self.train_idx), "held_out_count": len(held_idx)}
        self.sampler = BatchSampler(data.images, cfg.batch, cfg.seed, d.rank, d.world, subset=self.train_idx)
        self.held = np.asarray(data.images[held_idx[:N_VAL]])
        # ---- nets, optimisers, random state
        torch.manual_seed(cfg.seed)
        self.G, self.D = build_sr(m)
        if cfg.init and not h.resume:
            _init_from(self.G, cfg.init)
        self.adversarial = cfg.adv > 0
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.G.to(device, memory_format=fmt)
        self.D.to(device, memory_format=fmt)
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr, betas=(0.9, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr_d, betas=(0.9, 0.99))
        self.G_run = ddp(self.G, d)
        self.D_run = ddp(self.D, d) if self.adversarial else None
        self.features = _feature_net(device) if cfg.feature > 0 else None
        self.gen = torch.Generator(device).manual_seed(cfg.seed + 1 if d.rank == 0 else rank_seed(cfg.seed, d.rank, "sr"))
        self.weights_ = Weights(cfg.l1, cfg.feature, cfg.adv)

    def step(self, step: int, batch_u8: torch.Tensor) -> torch.Tensor:
        hr = to_model_input(batch_u8, self.cfg.flip, self.gen, self.cfg.channels_last)
        lr = degrade(hr, self.cfg.model.scale, self.cfg, self.gen)
        return sr_step(self.G_run, self.D_run, self.opt_g, self.opt_d, lr, hr, self.weights_, self.features,
                       D_frozen=self.D if self.adversarial else None)

    def record(self, v: list[float]) -> tuple[dict[str, float], str]:
        rec = {"loss_G": v[0], "l1": v[1], **({"feature": v[2]} if self.features is not None else {}),
               **({"loss_D": v[3]} if self.adversarial else {}), "psnr": v[4]}
        return rec, f"L1 {v[1]:.4f} PSNR {v[4]:.2f} dB" + (f" D {v[3]:.3f}" if self.adversarial else "")

    def nets(self) -> dict[str, torch.nn.Module]:
        return {"SR": self.G, **({"D": self.D} if self.adversarial else {})}

    def state(self) -> tuple[dict, dict]:
        return _state(self.h.step, self.cfg, self.G, self.D if self.adversarial else None, self.opt_g,
                      self.opt_d if self.adversarial else None, self.gen, self.h.device)

    def restore(self, tensors: dict, meta: dict) -> None:
        if meta.get("kind") != checkpoint.UPSCALER:
            raise FaceganError(f"{self.h.run_dir} is a GAN run; continue it with facegan train --resume {self.h.run_dir}")
        self.G.load_state_dict(checkpoint.module_state(tensors, "SR"))
        checkpoint.unpack_optimizer("optSR", self.opt_g, tensors, meta["optSR"])
        if "optD" in meta:
            self.D.load_state_dict(checkpoint.module_state(tensors, "D"))
            checkpoint.unpack_optimizer("optD", self.opt_d, tensors, meta["optD"])

    def rank_rng(self) -> dict[str, torch.Tensor]:
        return {**super().rank_rng(), "gen": self.gen.get_state()}

    def set_rank_rng(self, states: dict[str, torch.Tensor]) -> None:
        super().set_rank_rng(states)
        checkpoint.unpack_generator(states["gen"], self.gen, self.h.device)

    def reseed(self, step: int) -> None:
        super().reseed(step)
        self.gen.manual_seed(rank_seed(self.cfg.seed, self.h.dist.rank, f"sr/{step}"))

    def draw(self, step: int) -> None:
        """Held-out panel (input, bicubic, ours, truth) and the PSNR of N_VAL held-out faces."""
        m, held, run = self.cfg.model, self.held, self.h.run_dir
        lr, bic, ours = upscale_held(self.G, held, m.scale, self.h.device)
        p = min(PANEL, len(held))
        nearest = np.repeat(np.repeat(lr[:p], m.scale, 1), m.scale, 2)
        viz.save_grid(np.concatenate([nearest, bic[:p], ours[:p], held[:p]]), run / "samples" / f"step-{step:07d}.png", nrow=p)
        append_jsonl(run / "metrics.jsonl", {"step": step, "images": step * self.cfg.batch, "psnr_val": float(psnr(ours, held).mean()),
                                             "psnr_val_bicubic": float(psnr(bic, held).mean()), "val_n": len(held)})
        viz.update_run_pictures(run)

    def info(self) -> dict[str, Any]:
        return {"kind": checkpoint.UPSCALER, **self.counts}


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
