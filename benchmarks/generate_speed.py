"""Generation throughput: the bare generator, `G.sample`, and `facegan generate` to PNG files.

    python benchmarks/generate_speed.py                          # dcgan64, batch 256, fresh weights
    python benchmarks/generate_speed.py --run runs/celeba64      # a trained generator's faces
    python benchmarks/generate_speed.py --presets dcgan64 celeba128 --batch 1 256 --device cuda

Rows, faces/s: G's bare forward pass (NCHW, channels_last, and bf16 autocast where the hardware
has bf16); ``G.sample`` (the library call: per-face seeded latents, eval mode, uint8 out); and
`facegan generate` writing PNG files + manifest — as facegan 0.1.0 did it (one thread: encode,
then two fsyncs per file) and as now (PNG encoding on a thread per core, one flush at the end;
see facegan.viz.ImageWriter). "of bare" compares with the channels_last fp32 forward.

PNG cost depends on the pixels: a freshly initialised G draws noise, which compresses worse than
faces, so ``--run`` gives the numbers a user sees. Files go to ``--out-dir`` (default
``runs/bench-generate`` under the current folder: the place a run folder would be, since a
temporary folder may sit on another, slower file system) and are deleted afterwards.
GFLOP/face is FlopCounterMode's count of one forward pass.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch
from machine import describe, interleaved

from facegan import config, viz
from facegan.device import native_bf16, pick_device
from facegan.models.dcgan import Generator
from facegan.sample import generate
from facegan.saved import load_generator


def forward_flops(G: Generator) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    G = G.cpu()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        G(torch.zeros(2, G.cfg.z_dim))
    return fc.get_total_flops() / 2


def bf16_forward(G: Generator, z: torch.Tensor) -> torch.Tensor:
    with torch.autocast(z.device.type, torch.bfloat16):
        return G(z)


def write_only(imgs: np.ndarray, out: Path) -> None:
    """Only the PNG files of ``imgs`` (encoding and writing, as `generate` does it, no generator)."""
    out.mkdir(parents=True, exist_ok=True)
    with viz.ImageWriter() as writer:
        writer.write(imgs, [out / f"w-{k:06d}.png" for k in range(len(imgs))])


def generate_serial(G: Generator, out: Path, n: int, batch: int) -> None:
    """`facegan generate` as 0.1.0 wrote files: in the main thread, each PNG with two fsyncs."""
    out.mkdir(parents=True, exist_ok=True)
    for s in range(0, n, batch):
        imgs = G.sample(min(batch, n - s), seed=0, start=s, batch_size=batch)
        for k, img in enumerate(imgs):
            viz.save_image(img, out / f"seed0-{s + k:06d}.png")


def generators(args: argparse.Namespace, device: torch.device) -> list[tuple[str, Generator]]:
    if args.run:
        return [(Path(r).name, load_generator(r, device=device)) for r in args.run]
    out = []
    for preset in args.presets:
        torch.manual_seed(0)
        G = Generator(config.resolve(preset).model).to(device, memory_format=torch.channels_last).eval()
        out.append((f"{preset} (fresh weights)", G))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["dcgan64"])
    ap.add_argument("--run", nargs="+", help="trained runs/checkpoints instead of fresh presets")
    ap.add_argument("--batch", type=int, nargs="+", default=[256])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=4.0, help="minimum timing per row")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/bench-generate"))
    args = ap.parse_args()
    device = pick_device(args.device)
    bf16 = native_bf16(device)
    print(describe(device))
    print("\n| generator | res | batch | path | faces/s median (min–max) | of bare | GFLOP/face | GFLOP/s |\n|---|---|---|---|---|---|---|---|")
    try:
        for name, G in generators(args, device):
            fl = forward_flops(G) / 1e9
            G.to(device, memory_format=torch.channels_last)
            for b in args.batch:
                n = max(b, 1024 if device.type == "cpu" else 8192)
                z = torch.randn(b, G.cfg.z_dim, device=device)
                out = args.out_dir / "faces"
                imgs = G.sample(n, batch_size=b)
                G_nchw = copy.deepcopy(G).to(memory_format=torch.contiguous_format)
                paths = [("forward NCHW fp32", lambda: G_nchw(z), b),
                         ("forward channels_last fp32 (bare G)", lambda: G(z), b)]
                if bf16:
                    paths.append(("forward channels_last bf16 autocast", lambda: bf16_forward(G, z), b))
                paths += [("G.sample (API), fp32", lambda: G.sample(b, batch_size=b), b),
                          ("PNG writing alone, thread per core", lambda: write_only(imgs, out), n),
                          ("generate → PNG, 0.1.0 serial (2 fsyncs/file)", lambda: generate_serial(G, out, n, b), n),
                          ("generate → PNG, now", lambda: generate(G, out, n, batch_size=b, progress=False), n)]
                if bf16:
                    paths.append(("generate → PNG, now, --precision bf16",
                                  lambda: generate(G, out, n, batch_size=b, progress=False, precision="bf16"), n))
                with torch.inference_mode():
                    rates = interleaved(paths, device, args.seconds)
                bare = rates["forward channels_last fp32 (bare G)"]
                for label, r in rates.items():
                    of_bare = statistics.median(x / y for x, y in zip(r, bare))
                    print(f"| {name} | {G.cfg.res} | {b} | {label} | {statistics.median(r):.1f} ({min(r):.0f}–{max(r):.0f}) "
                          f"| {of_bare:.0%} | {fl:.3f} | {statistics.median(r) * fl:.1f} |", flush=True)
                both = [1 / (1 / s_ + 1 / w) for s_, w in zip(rates["G.sample (API), fp32"],
                                                              rates["PNG writing alone, thread per core"])]
                print(f"| {name} | {G.cfg.res} | {b} | bound if G.sample and PNG writing take turns on all cores "
                      f"| {statistics.median(both):.1f} | {statistics.median(x / y for x, y in zip(both, bare)):.0%} | | |")
                if not bf16:
                    print(f"| {name} | {G.cfg.res} | {b} | bf16 rows | skipped: no native bf16 here (emulated) | | | |")
    finally:
        shutil.rmtree(args.out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
