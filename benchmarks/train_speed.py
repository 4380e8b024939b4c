"""Training throughput: `facegan train` against a pytorch/examples-style reference loop, side by side.

    python benchmarks/train_speed.py                          # dcgan64, batch 128, AAF faces if present
    python benchmarks/train_speed.py --presets dcgan64 celeba128 --batch 64 --steps 6 --reps 2
    python benchmarks/train_speed.py --no-reference --variants default fp32-nchw compile
    python benchmarks/train_speed.py --limits-only            # this machine's GFLOP/s ceilings
    python benchmarks/train_speed.py --no-reference --batch 16 --variants default proj64 proj128 proj128-fp32

The reference re-implements pytorch/examples `dcgan/main.py` without torchvision: a Dataset of
image files decoded per item with PIL (resize, centre crop, to tensor, normalise) in DataLoader
workers, the preset's nets and init, Sigmoid + BCELoss, fp32, NCHW, D's weight gradients computed
in the G step as the example does. facegan runs `train()` on the same images (prepared once
beforehand; preparing is a one-off per dataset, not part of a step).

Every measurement runs in a fresh child process, one after another, so peak memory (VmHWM: the
process's RSS high-water mark; "anon": its private memory at the end, i.e. without the
memory-mapped dataset's page cache) belongs to that loop alone. img/s is steps×batch over wall
time after two warm-up steps, median (min–max) over ``--reps``; the repetitions of all loops are
interleaved, and "ratio" is the median of the per-repetition ratios.

The ceilings: a large fp32 (and bf16) matmul and a DCGAN-sized convolution timed here, the FLOPs
of one training step counted by torch's FlopCounterMode, and the achieved GFLOP/s of each loop
as a fraction of the ceilings — the evidence for how much faster this machine can go.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from machine import describe, seconds_per_call, sync

from facegan import config
from facegan.data.prepare import resolve_dataset
from facegan.data.procedural import render_faces
from facegan.device import native_bf16, pick_device, pick_precision
from facegan.models.dcgan import build
from facegan.train.loop import gan_step, train
from facegan.viz import read_metrics

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-aaf-128.zip"
WARMUP = 2
VARIANTS = {  # name → TrainConfig overrides; "default" is what `facegan train` does unasked
    "default": {},
    "fp32-nchw": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "resident": {"resident": "on"},
    # the projected discriminator (issue #28) by the side its feature net sees, in the default precision and in fp32
    **{f"proj{r}{p}": {"d_arch": "projected", "d_feat_res": r, "loss": "hinge", "augment": "color,translation,cutout",
                       **({"precision": "fp32"} if p else {})}
       for r in (64, 96, 128, 160, 224) for p in ("", "-fp32")},
}


def jpeg_folder(root: Path, n: int) -> Path:
    """n face JPEGs in a folder: AAF photos when present, else procedural faces at 128²."""
    out = root / "jpegs"
    out.mkdir()
    if SHARED.is_file():
        with zipfile.ZipFile(SHARED) as z:
            names = [m for m in z.namelist() if m.lower().endswith(".jpg")][:n]
            for i, m in enumerate(names):
                (out / f"{i:06d}.jpg").write_bytes(z.read(m))
    else:
        for i, im in enumerate(render_faces(n, 128, seed=0)):
            Image.fromarray(im).save(out / f"{i:06d}.jpg", quality=95)
    return out


class ImageFiles(torch.utils.data.Dataset):
    """torchvision ImageFolder + Resize/CenterCrop/ToTensor/Normalize, re-done with PIL."""

    def __init__(self, folder: Path, res: int) -> None:
        self.files, self.res = sorted(folder.glob("*.jpg")), res

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.open(self.files[i]).convert("RGB")
        w, h = img.size
        s = self.res / min(w, h)
        img = img.resize((max(self.res, round(w * s)), max(self.res, round(h * s))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - self.res) // 2, (h - self.res) // 2
        img = img.crop((left, top, left + self.res, top + self.res))
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
        return (x - 0.5) / 0.5


def reference(preset: str, folder: Path, batch: int, steps: int, workers: int, device: torch.device) -> float:
    """img/s of the pytorch/examples loop (fp32, per-image decode in DataLoader workers)."""
    cfg = config.resolve(preset)
    torch.manual_seed(0)
    G, D = build(cfg.model)
    D = nn.Sequential(D, nn.Sigmoid())  # the example's D ends in Sigmoid and trains with BCELoss
    G.to(device)
    D.to(device)
    crit = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(ImageFiles(folder, cfg.model.res), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    it, t0 = iter(loader), 0.0
    for k in range(steps + WARMUP):
        if k == WARMUP:
            sync(device)
            t0 = time.time()
        try:
            real = next(it)
        except StopIteration:
            it = iter(loader)
            real = next(it)
        reference_step(G, D, crit, opt_g, opt_d, real.to(device), torch.randn(batch, cfg.model.z_dim, device=device))
    sync(device)
    return steps * batch / (time.time() - t0)


def reference_step(G: nn.Module, D: nn.Module, crit: nn.Module, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer, real: torch.Tensor, z: torch.Tensor) -> None:
    """pytorch/examples dcgan's step, line for line: D on real, D on fake, then G through D."""
    b, dev = real.size(0), real.device
    D.zero_grad()
    crit(D(real), torch.ones(b, device=dev)).backward()
    fake = G(z)
    crit(D(fake.detach()), torch.zeros(b, device=dev)).backward()
    opt_d.step()
    G.zero_grad()
    crit(D(fake), torch.ones(b, device=dev)).backward()  # also computes D's weight grads, unused
    opt_g.step()


def facegan_rate(preset: str, data: str, batch: int, steps: int, device: str, out: Path, overrides: dict) -> float:
    """img/s of `facegan train` after the warm-up steps (the first log line is at step WARMUP)."""
    cfg = config.resolve(preset, data=data, out=str(out), batch=batch, device=device, max_images=batch * (steps + WARMUP),
                         log_every=WARMUP, sample_every=10**9, ckpt_every=10**9, **overrides)
    train(cfg, progress=False)
    recs = read_metrics(out / "metrics.jsonl")
    warm, last = recs[0], recs[-1]  # "time" is seconds since the run started
    return (last["step"] - warm["step"]) * batch / (last["time"] - warm["time"])


def _memory() -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    mb = {k: int(status[k].split()[0]) / 1024 for k in ("VmHWM", "RssAnon") if k in status}
    if torch.cuda.is_available():
        mb["gpu"] = torch.cuda.max_memory_allocated() / 2**20
    return mb


def _child(q: Any, fn: str, kwargs: dict) -> None:
    try:
        rate = reference(**kwargs) if fn == "reference" else facegan_rate(**kwargs)
        q.put((rate, _memory()))
    except Exception as e:  # report, don't hang the parent
        q.put((f"{type(e).__name__}: {e}", {}))


def in_child(fn: str, **kwargs: Any) -> tuple[float | str, dict]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, kwargs))
    p.start()
    out = q.get()
    p.join()
    return out


def step_flops(preset: str, loop: str) -> float:
    """FLOPs per image of one training step of ``loop`` (FlopCounterMode; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    m, b = config.resolve(preset).model, 4
    G, D = build(m)
    opt_g, opt_d = (torch.optim.Adam(n.parameters(), 2e-4) for n in (G, D))
    real, z = torch.zeros(b, m.channels, m.res, m.res), torch.randn(b, m.z_dim)
    with FlopCounterMode(display=False) as fc:
        if loop == "reference":
            reference_step(G, nn.Sequential(D, nn.Sigmoid()), nn.BCELoss(), opt_g, opt_d, real, z)
        else:
            gan_step(G, D, opt_g, opt_d, real, z, (torch.ones(b), torch.zeros(b)))
    return fc.get_total_flops() / b


def ceilings(device: torch.device) -> dict[str, float]:
    """Measured GFLOP/s of a large matmul and a DCGAN-layer convolution (forward), fp32 and bf16."""
    def rate(fn: Any, flops: float, reps: int) -> float:
        return flops / seconds_per_call(fn, device, reps) / 1e9

    gpu, bf16 = device.type == "cuda", native_bf16(device)
    out = {}
    for dt, n in ((torch.float32, 8192 if gpu else 2048), (torch.bfloat16, 8192 if gpu else 2048 if bf16 else 512)):
        a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
        out[f"matmul {str(dt)[6:]} {n}²"] = rate(lambda: a @ b, 2 * n**3, 20 if gpu else 3)
    conv = nn.Conv2d(128, 256, 4, 2, 1, bias=False).to(device, memory_format=torch.channels_last)
    bsz = 1024 if gpu else 128
    x = torch.randn(bsz, 128, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * bsz * 256 * 128 * 16 * 8 * 8
    with torch.no_grad():
        out["conv fp32 128→256 16²"] = rate(lambda: conv(x), flops, 20 if gpu else 3)
        if bf16:  # emulated bf16 (AVX2) would take minutes here and mean nothing
            with torch.autocast(device.type, torch.bfloat16):
                out["conv bf16 128→256 16²"] = rate(lambda: conv(x), flops, 20 if gpu else 3)
    return out


def fmt(rates: list[float]) -> str:
    return f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["dcgan64"])
    ap.add_argument("--batch", type=int, nargs="+", default=[128])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS),
                    help="facegan settings to time: " + "; ".join(f"{k}={v or 'as shipped'}" for k, v in VARIANTS.items()))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--limits-only", action="store_true", help="only measure this machine's GFLOP/s ceilings")
    args = ap.parse_args()

    device = pick_device(args.device)
    print(f"{describe(device)}; data {'AAF faces' if SHARED.is_file() else 'procedural JPEGs'}, "
          f"{args.steps} steps × {args.reps} reps")
    ceil = ceilings(device)
    print("\n| ceiling | GFLOP/s |\n|---|---|")
    for k, v in ceil.items():
        print(f"| {k} | {v:.1f} |", flush=True)
    if args.limits_only:
        return

    def ceiling(prec: str) -> float:  # the best rate measured here in the row's precision
        names = ("bf16", "bfloat16") if prec == "bf16" else ("fp32", "float32")
        return max((v for k, v in ceil.items() if any(n in k for n in names)), default=float("nan"))

    print("\n| preset | batch | loop | precision | img/s median (min–max) | ratio | GFLOP/img | GFLOP/s "
          "| of ceiling (same precision) | peak RSS MB | anon MB | GPU MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = jpeg_folder(Path(tmp), max(args.batch) * (args.steps + WARMUP + 1))
        for preset in args.presets:
            res = config.resolve(preset).model.res
            data = str(resolve_dataset(str(SHARED) if SHARED.is_file() else "procedural:4096", res, progress=False))
            flops, ref_flops = step_flops(preset, "facegan"), step_flops(preset, "reference")
            for batch in args.batch:
                def row(loop: str, prec: str, rates: list[float], mem: dict, fl: float, ref: list[float] | None) -> None:
                    # the ratio is the median of per-round ratios: both loops of a round ran minutes apart, not hours
                    ratio = f"{statistics.median(a / b for a, b in zip(rates, ref)):.2f}×" if ref else "1.00×"
                    gfs = fl * statistics.median(rates) / 1e9
                    print(f"| {preset} | {batch} | {loop} | {prec} | {fmt(rates)} | {ratio} | {fl / 1e9:.2f} | {gfs:.1f} "
                          f"| {gfs / ceiling(prec):.0%} | {mem.get('VmHWM', 0):.0f} | {mem.get('RssAnon', 0):.0f} "
                          f"| {mem.get('gpu', 0):.0f} |", flush=True)

                # repetitions interleaved (reference, then each variant, round after round): a shared
                # VM's speed drifts by ±20 % over minutes, and each round sees one condition
                loops = ([] if args.no_reference else ["reference"]) + list(args.variants)
                runs: dict[str, list] = {name: [] for name in loops}
                for r in range(args.reps):
                    for name in loops:
                        if name == "reference":
                            runs[name].append(in_child("reference", preset=preset, folder=folder, batch=batch,
                                                       steps=args.steps, workers=args.workers, device=device))
                        else:
                            runs[name].append(in_child("facegan", preset=preset, data=data, batch=batch, steps=args.steps,
                                                       device=args.device, out=Path(tmp) / f"{preset}-{batch}-{name}-{r}",
                                                       overrides=VARIANTS[name]))
                ref = None
                if "reference" in runs:
                    if any(isinstance(r, str) for r, _ in runs["reference"]):
                        raise SystemExit(f"reference loop failed: {runs['reference']}")
                    ref = [r for r, _ in runs["reference"]]
                    row("pytorch/examples-style", "fp32", ref, runs["reference"][-1][1], ref_flops, None)
                for v in args.variants:
                    if any(isinstance(r, str) for r, _ in runs[v]):
                        print(f"| {preset} | {batch} | facegan {v} | — | failed: {runs[v][0][0]} |", flush=True)
                        continue
                    prec = pick_precision(VARIANTS[v].get("precision", "auto"), device)
                    row(f"facegan train ({v})", prec, [r for r, _ in runs[v]], runs[v][-1][1], flops, ref)

if __name__ == "__main__":
    main()
