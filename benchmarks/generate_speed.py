"""Generation throughput: faces/s of a generator at batch 1 and 256, 64² and 128².

    python benchmarks/generate_speed.py                     # dcgan64 and celeba128, batch 1 and 256
    python benchmarks/generate_speed.py --presets quick --batch 1 64 --device cuda

Rows: ``G.sample`` (the library call behind `facegan generate`: per-face seeded latents, eval-mode
G, uint8 out) with the generator as `load_generator` returns it; the bare forward pass in NCHW and
channels_last layouts; and `facegan generate`'s whole path including PNG encoding and the
manifest. Weights are freshly initialised — speed does not depend on their values. The GFLOP
column is FlopCounterMode's count of one forward pass per face; with the measured ceilings of
benchmarks/train_speed.py it bounds what any implementation could reach on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

import torch

from facegan import config
from facegan.device import pick_device
from facegan.models.dcgan import Generator
from facegan.sample import generate


def timed(fn: Callable[[], object], faces: int, device: torch.device, min_s: float) -> float:
    """faces/s of ``fn`` (which makes ``faces`` faces), repeated for at least ``min_s`` seconds."""
    fn()  # warm-up
    rates, t_end = [], time.time() + min_s
    while time.time() < t_end or len(rates) < 3:
        t = time.time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(faces / (time.time() - t))
    return statistics.median(rates)


def forward_flops(G: Generator) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        G(torch.zeros(2, G.cfg.z_dim))
    return fc.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["dcgan64", "celeba128"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=4.0, help="minimum timing per row")
    args = ap.parse_args()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {time.strftime('%Y-%m-%d')} torch {torch.__version__}, {name}")
    print("| preset | res | batch | path | faces/s | GFLOP/face | GFLOP/s |\n|---|---|---|---|---|---|---|")
    for preset in args.presets:
        torch.manual_seed(0)
        G = Generator(config.resolve(preset).model).to(device).eval()
        fl = forward_flops(G.cpu()) / 1e9
        G.to(device)
        for b in args.batch:
            z = torch.randn(b, G.cfg.z_dim, device=device)

            paths = [("G.sample (API)", None), ("forward NCHW", torch.contiguous_format),
                     ("forward channels_last", torch.channels_last)]
            with torch.inference_mode():
                for label, layout in paths:
                    if layout is not None:
                        G.to(memory_format=layout)
                    fn = (lambda: G.sample(b, batch_size=b)) if layout is None else (lambda: G(z))
                    r = timed(fn, b, device, args.seconds)
                    print(f"| {preset} | {G.cfg.res} | {b} | {label} | {r:.1f} | {fl:.3f} | {r * fl:.1f} |", flush=True)
                G.to(memory_format=torch.contiguous_format)
            with tempfile.TemporaryDirectory() as tmp:
                n = max(b, 64)
                r = timed(lambda: generate(G, tmp, n, batch_size=b, progress=False), n, device, args.seconds)
            print(f"| {preset} | {G.cfg.res} | {b} | facegan generate (PNG files) | {r:.1f} | {fl:.3f} | {r * fl:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
