"""Training throughput of `facegan train` per preset, as a table.

    python benchmarks/train_speed.py --presets quick dcgan64 [--data SRC] [--steps 30]

Each preset trains for ``--steps`` steps on the given data (default: built-in procedural faces)
in a temporary run folder; img/s is taken from the metrics log (every 5 steps), skipping the
first interval (warm-up), and reported as median / min / max. Peak RSS is of this process.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facegan import config
from facegan.device import pick_device, pick_precision
from facegan.train.loop import train
from facegan.viz import read_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["quick", "dcgan64"])
    ap.add_argument("--data", default=None, help="training data (default: procedural faces)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", nargs="+", default=["auto"], help="one or more of auto, fp32, bf16")
    args = ap.parse_args()

    device = pick_device(args.device)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {device}, {time.strftime('%Y-%m-%d')}")
    print(f"| preset | batch | precision | img/s median | min | max | peak RSS MB |")
    print(f"|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, prec in [(n, p) for n in args.presets for p in args.precision]:
            cfg = config.resolve(name, data=args.data, out=str(Path(tmp) / f"{name}-{prec}"), batch=args.batch,
                                 device=args.device, precision=prec, log_every=5, sample_every=10**9, ckpt_every=10**9)
            cfg.max_images, cfg.epochs, cfg.max_time = cfg.batch * args.steps, None, None
            train(cfg, progress=False)
            rates = [r["img_per_s"] for r in read_metrics(Path(cfg.out) / "metrics.jsonl")][1:-1]
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {name} | {cfg.batch} | {pick_precision(cfg.precision, device)} | {statistics.median(rates):.1f} | "
                  f"{min(rates):.1f} | {max(rates):.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
