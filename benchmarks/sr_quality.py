"""How good and how fast the face upscalers are: held-out PSNR/SSIM vs bicubic, throughput, and the
DCGAN→SR pipeline's FID, printed as markdown tables for docs/benchmarks.md.

    python benchmarks/sr_quality.py --data ../shared/data/faces-aaf-128.zip --models runs/sr-l1,runs/sr-gan \
        --gan runs/quick32 --n-fake 1000 --n-real 1000 --pictures docs/images

1. Held-out quality: every model's run config names its held-out split (every k-th image of
   the dataset, never trained on); each image is downscaled (antialiased bicubic, 8-bit),
   upscaled back by bicubic and by each model, and compared with the original: PSNR, SSIM, and
   "fine detail" = the squared Laplacian energy of the results over that of the truth (1.0 = as
   much edge and texture energy as the real photos; blur gives less, noise or ringing more).
2. Throughput: upscaled images per second at batch 1 and 64 (input side = hr_res / scale), after
   warm-up, median of 5 timed repetitions.
3. Pipeline (with --gan, needs the metrics extra): n faces from a DCGAN run at low resolution,
   enlarged by bicubic and by each model, FID/KID against n real images at the high resolution.
With --pictures, writes sr_heldout.png (input / bicubic / models / truth) and sr_pipeline.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from facegan import checkpoint, viz
from facegan.data.loader import to_model_input
from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.device import pick_device
from facegan.models.dcgan import to_uint8
from facegan.models.srresnet import bicubic
from facegan.saved import load_upscaler
from facegan.train.sr import split, upscale_held
from facegan.upscale import evaluate_heldout

PANEL = 6


def heldout_table(models: dict[str, torch.nn.Module], data: Path, holdout: int) -> list[str]:
    rows = ["| upscaler | held-out faces | PSNR dB | Δ vs bicubic | SSIM | Δ SSIM | fine detail vs truth |",
            "|---|---|---|---|---|---|---|"]
    for name, G in models.items():
        t = time.time()
        r = evaluate_heldout(G, data, holdout)
        ours, bic = r["detail"], r["detail_bicubic"]
        if len(rows) == 2:
            rows.append(f"| bicubic | {r['n']} | {r['psnr_bicubic']:.2f} | — | {r['ssim_bicubic']:.4f} | — | {bic:.2f} |")
        rows.append(f"| {name} | {r['n']} | {r['psnr']:.2f} | {r['psnr'] - r['psnr_bicubic']:+.2f} | {r['ssim']:.4f} | "
                    f"{r['ssim'] - r['ssim_bicubic']:+.4f} | {ours:.2f} |")
        print(f"  {name}: {json.dumps(r)} ({time.time() - t:.0f} s)", flush=True)
    return rows


def speed_table(models: dict[str, torch.nn.Module], side: int, device: torch.device) -> list[str]:
    rows = ["| upscaler | input | batch 1 img/s | batch 64 img/s |", "|---|---|---|---|"]
    for name, G in models.items():
        rates = []
        for b in (1, 64):
            x = torch.randn(b, G.cfg.channels, side, side, device=device).contiguous(memory_format=torch.channels_last)
            reps = []
            with torch.inference_mode():
                G(x)
                for _ in range(5):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    n = max(1, 32 // b)
                    for _ in range(n):
                        G(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    reps.append(n * b / (time.perf_counter() - t))
            rates.append(statistics.median(reps))
        rows.append(f"| {name} | {side}² → {side * G.cfg.scale}² | {rates[0]:.1f} | {rates[1]:.1f} |")
    return rows


def pipeline_table(models: dict[str, torch.nn.Module], gan: str, data: str, n_fake: int, n_real: int,
                   device: torch.device) -> tuple[list[str], dict[str, np.ndarray]]:
    from facegan.metrics.evaluate import Evaluator
    from facegan.sample import faces
    from facegan.saved import load_generator

    G = load_generator(gan, device=device)
    small = faces(G, n_fake, seed=0)
    scale = next(iter(models.values())).cfg.scale
    x = to_model_input(torch.from_numpy(small))
    sets = {"bicubic": np.concatenate([to_uint8(bicubic(x[i : i + 64], scale)) for i in range(0, n_fake, 64)])}
    sets.update({name: M.upscale(small) for name, M in models.items()})
    ev = Evaluator(data, G.cfg.res * scale, G.cfg.channels, n_real=n_real, device=device, progress=False)
    rows = [f"| {G.cfg.res}² DCGAN faces ×{scale} by | n fake / real | FID | KID ×10³ |", "|---|---|---|---|"]
    for name, imgs in sets.items():
        t = time.time()
        r = ev.of_array(imgs, ("fid", "kid"))
        rows.append(f"| {name} | {int(r['n_fake'])} / {int(r['n_real'])} | {r['fid']:.2f} | "
                    f"{r['kid_mean'] * 1e3:.2f} ± {r['kid_std'] * 1e3:.2f} |")
        print(f"  {name}: FID {r['fid']:.2f} ({time.time() - t:.0f} s)", flush=True)
    return rows, {"generated": small, **sets}


def heldout_picture(models: dict[str, torch.nn.Module], data: Path, holdout: int, path: Path) -> None:
    """Columns of held-out faces; rows: input (nearest), bicubic, each model, truth."""
    images = open_prepared(data).images
    idx = split(len(images), holdout)[1]
    held = np.asarray(images[idx[np.linspace(0, len(idx) - 1, PANEL).round().astype(int)]])  # spread over the split
    rows = []
    for i, G in enumerate(models.values()):
        lr, bic, ours = upscale_held(G, held, G.cfg.scale, next(G.parameters()).device)
        if i == 0:
            s = G.cfg.scale
            rows += [np.repeat(np.repeat(lr, s, 1), s, 2), bic]
        rows.append(ours)
    rows.append(held)
    viz.save_grid(np.concatenate(rows), path, nrow=len(held))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the dataset the upscalers were trained on")
    ap.add_argument("--models", required=True, help="comma-separated upscaler run folders")
    ap.add_argument("--gan", help="a DCGAN run at hr_res / scale for the pipeline FID")
    ap.add_argument("--n-fake", type=int, default=1000)
    ap.add_argument("--n-real", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pictures", type=Path, help="folder for sr_heldout.png and sr_pipeline.png")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-heldout", action="store_true")
    args = ap.parse_args()
    device = pick_device(args.device)
    runs = [Path(m) for m in args.models.split(",")]
    models = {r.name: load_upscaler(r, device=device) for r in runs}
    cfg = checkpoint.load(runs[0])[1]["config"]
    holdouts = {checkpoint.load(r)[1]["config"]["holdout"] for r in runs}
    if len(holdouts) != 1:
        raise SystemExit(f"the models were trained with different held-out splits: {holdouts}")
    data = resolve_dataset(args.data, cfg["hr_res"], cfg["model"]["channels"])
    print(f"# {time.strftime('%Y-%m-%d')}, device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not args.skip_heldout:
        print("\n".join(heldout_table(models, data, cfg["holdout"])), flush=True)
    if args.pictures and not args.skip_heldout:
        heldout_picture(models, data, cfg["holdout"], args.pictures / "sr_heldout.png")
    if not args.skip_speed:
        print("\n".join(speed_table(models, cfg["hr_res"] // cfg["model"]["scale"], device)), flush=True)
    if args.gan:
        rows, sets = pipeline_table(models, args.gan, args.data, args.n_fake, args.n_real, device)
        print("\n".join(rows), flush=True)
        if args.pictures:
            s = next(iter(models.values())).cfg.scale
            small = np.repeat(np.repeat(sets.pop("generated")[:PANEL], s, 1), s, 2)
            viz.save_grid(np.concatenate([small] + [v[:PANEL] for v in sets.values()]), args.pictures / "sr_pipeline.png", nrow=PANEL)


if __name__ == "__main__":
    main()
