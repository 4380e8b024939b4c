"""Training throughput: `facegan train` against a pytorch/examples-style reference loop, side by side.

    python benchmarks/train_speed.py                       # dcgan64, batch 128, AAF faces if present
    python benchmarks/train_speed.py --presets quick dcgan64 --batch 64 --steps 12 --reps 3
    python benchmarks/train_speed.py --no-reference --precision fp32 bf16

The reference re-implements pytorch/examples `dcgan/main.py` without torchvision: a Dataset of
image files decoded per item with PIL (resize, centre crop, to tensor, normalise) in DataLoader
workers, the same nets and init (only for presets whose net the example has), Sigmoid + BCELoss,
fp32. Both run in this one process on the same data, one after the other, ``--reps`` times each;
img/s is steps×batch over wall time after one warm-up step, reported as median (min–max).

Data: ../shared/data/faces-aaf-128.zip when present (the reference gets its JPEGs extracted to a
temporary folder, facegan reads the zip), else generated JPEG files. Peak RSS is this process's
high-water mark so far (the reference runs first, so facegan's figure includes it).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from facegan import config
from facegan.data.procedural import render_faces
from facegan.device import pick_device, pick_precision
from facegan.models.dcgan import build
from facegan.train.loop import train
from facegan.viz import read_metrics

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-aaf-128.zip"
REFERENCE_PRESETS = {"dcgan64"}  # the nets pytorch/examples dcgan has


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


def reference(preset: str, folder: Path, batch: int, steps: int, workers: int) -> float:
    """img/s of the pytorch/examples loop (fp32, per-image decode in DataLoader workers)."""
    cfg = config.resolve(preset)
    torch.manual_seed(0)
    G, D = build(cfg.model)
    D = nn.Sequential(D, nn.Sigmoid())  # the example's D ends in Sigmoid and trains with BCELoss
    crit = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(ImageFiles(folder, cfg.model.res), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    it, t0 = iter(loader), 0.0
    for k in range(steps + 1):  # step 0 is warm-up (worker start-up, allocator)
        if k == 1:
            t0 = time.time()
        try:
            real = next(it)
        except StopIteration:
            it = iter(loader)
            real = next(it)
        b = real.size(0)
        D.zero_grad()
        err_real = crit(D(real), torch.ones(b))
        err_real.backward()
        fake = G(torch.randn(b, cfg.model.z_dim))
        err_fake = crit(D(fake.detach()), torch.zeros(b))
        err_fake.backward()
        opt_d.step()
        G.zero_grad()
        crit(D(fake), torch.ones(b)).backward()
        opt_g.step()
    return steps * batch / (time.time() - t0)


def facegan_rate(preset: str, data: str, batch: int, steps: int, precision: str, device: str, out: Path) -> float:
    """img/s of `facegan train` (data prepared beforehand, so decoding is not timed)."""
    cfg = config.resolve(preset, data=data, out=str(out), batch=batch, device=device, precision=precision,
                         max_images=batch * (steps + 1), log_every=1, sample_every=10**9, ckpt_every=10**9)
    train(cfg, progress=False)
    recs = read_metrics(out / "metrics.jsonl")[1:]  # one record per step; the first is warm-up
    return len(recs) * batch / sum(batch / r["img_per_s"] for r in recs)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmt(rates: list[float]) -> str:
    return f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["dcgan64"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--precision", nargs="+", default=["auto"], help="facegan precisions: auto, fp32, bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()

    device = pick_device(args.device)
    data = str(SHARED) if SHARED.is_file() else None
    print(f"# {time.strftime('%Y-%m-%d')} torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"data {'AAF faces' if data else 'procedural JPEGs'}, batch {args.batch}, {args.steps} steps × {args.reps} reps")
    print("| preset | loop | precision | img/s median (min–max) | ratio | peak RSS MB |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = jpeg_folder(Path(tmp), args.batch * (args.steps + 2))
        for preset in args.presets:
            ref = None
            if not args.no_reference and preset in REFERENCE_PRESETS and device.type == "cpu":
                ref = [reference(preset, folder, args.batch, args.steps, args.workers) for _ in range(args.reps)]
                print(f"| {preset} | pytorch/examples-style | fp32 | {fmt(ref)} | 1.00× | {rss_mb():.0f} |", flush=True)
            for prec in args.precision:
                ours = [facegan_rate(preset, data or "procedural:2048", args.batch, args.steps, prec, args.device,
                                     Path(tmp) / f"{preset}-{prec}-{r}") for r in range(args.reps)]
                ratio = f"{statistics.median(ours) / statistics.median(ref):.2f}×" if ref else "—"
                print(f"| {preset} | facegan train | {pick_precision(prec, device)} | {fmt(ours)} | {ratio} | "
                      f"{rss_mb():.0f} |", flush=True)


if __name__ == "__main__":
    main()
