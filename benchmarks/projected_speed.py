"""What the projected discriminator's parts cost per training image, by the side fed to the feature net.

    python benchmarks/projected_speed.py                      # batch 16, sides 64 96 128 160 224, fp32 and bf16
    python benchmarks/projected_speed.py --sides 128 --reps 5

Per training image the loop runs D three times: D's step forwards a real and a fake batch, G's
step forwards a fake batch and backpropagates to the image. This times exactly that for the two
parts of the projected D — the frozen EfficientNet-Lite0 (with the resize to the side) and the
trainable part (random projections + four mini-discriminators, whose weight gradients D's step
also needs) — in fp32 and under bf16 autocast, channels_last, ms per image (median over reps).
The whole training step, G included, is ``train_speed.py --variants default proj64 proj128 ...``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from machine import describe, sync

from facegan.device import native_bf16, pick_device
from facegan.models.dcgan import ModelConfig
from facegan.models.projected import ProjectedDiscriminator


def step_ms(fn, reps: int, batch: int, device: torch.device) -> float:
    """Median ms per image of ``fn`` (one batch's D work) after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times) / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", type=int, nargs="+", default=[64, 96, 128, 160, 224])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = pick_device(args.device)
    precisions = ["fp32"] + (["bf16"] if native_bf16(device) else [])
    print(f"{describe(device)}; batch {args.batch}, 64² images, median of {args.reps}\n")
    print("| side fed to the features | precision | features ms/img | projections + mini-Ds ms/img | D total ms/img |")
    print("|---|---|---|---|---|")
    for side in args.sides:
        torch.manual_seed(0)
        D = ProjectedDiscriminator(ModelConfig(res=64, d_arch="projected", d_feat_res=side)).to(
            device, memory_format=torch.channels_last)
        x = (torch.rand(args.batch, 3, 64, 64, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
        for prec in precisions:
            ctx = (lambda: torch.autocast(device.type, torch.bfloat16)) if prec == "bf16" else nullcontext

            def features_only() -> None:  # two forwards without grad (D's step), one forward + backward to the input (G's)
                with ctx():
                    for _ in range(2):
                        with torch.no_grad():
                            D.features(F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False))
                    xi = x.detach().requires_grad_(True)
                    out = D.features(F.interpolate(xi, size=(side, side), mode="bilinear", align_corners=False))
                    sum(o.float().sum() for o in out).backward()

            def whole_d() -> None:  # D's step (weight grads) on real + fake, then G's pass to the input
                with ctx():
                    (D(x).float().mean() + D(x).float().mean()).backward()
                    xi = x.detach().requires_grad_(True)
                    D(xi).float().mean().backward()

            f, w = step_ms(features_only, args.reps, args.batch, device), step_ms(whole_d, args.reps, args.batch, device)
            print(f"| {side} | {prec} | {f:.1f} | {w - f:.1f} | {w:.1f} |", flush=True)


if __name__ == "__main__":
    main()
