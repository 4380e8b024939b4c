"""Train a preset for a fixed number of images, evaluate it, and append a row to docs/benchmarks.md.

    python benchmarks/quality.py --data ../shared/data/faces-aaf-128.zip --preset dcgan64 --max-images 40000 -n 5000
    python benchmarks/quality.py --data ../shared/data/faces-aaf-128.zip --res 64 --floor

``--floor`` evaluates the real data against itself (even vs odd images: two disjoint halves),
the best score any generator could get with that many images. Every row states the images
seen, wall time, device and seed, so rows are comparable only at equal budgets.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from facegan import config, load_generator, metrics
from facegan.device import pick_device
from facegan.metrics import inception
from facegan.metrics.evaluate import Evaluator, format_table
from facegan.train.loop import train
from facegan.viz import read_metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = ("| date | run | data | images seen | train wall | device | n fake / real | FID | KID ×10³ | precision | "
          "recall | density | coverage | memorized |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, data: str, images: str, wall: str, device: str, r: dict) -> str:
    kid = f"{r['kid_mean'] * 1e3:.2f} ± {r['kid_std'] * 1e3:.2f}"
    return (f"| {time.strftime('%Y-%m-%d')} | {name} | {Path(data).name} | {images} | {wall} | {device} | "
            f"{int(r['n_fake'])} / {int(r['n_real'])} | {r['fid']:.2f} | {kid} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} | {r['mem_fraction'] * 100:.2f} % |")


def append(line: str) -> None:
    """Append a row under the '## Quality' table, creating the section the first time."""
    text = DOC.read_text()
    if "## Quality" not in text:
        text += "\n## Quality\n\nRows appended by `benchmarks/quality.py` (FID etc. via `facegan evaluate`; real set = the training data).\n\n" + HEADER + "\n"
    DOC.write_text(text.rstrip("\n") + "\n" + line + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="dcgan64")
    ap.add_argument("--res", type=int, default=None, help="with --floor: resolution (default 64)")
    ap.add_argument("--n-real", type=int, default=None, help="real images used (default: all); evenly spaced")
    ap.add_argument("--max-images", type=int, default=40_000)
    ap.add_argument("-n", type=int, default=10_000, help="generated faces to evaluate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--floor", action="store_true", help="real-vs-real: two disjoint halves of --data")
    ap.add_argument("--out", default=None, help="keep the run here (default: a temporary folder)")
    ap.add_argument("--run", default=None, help="evaluate this finished run instead of training one")
    ap.add_argument("--name", default=None, help="row label (default: `PRESET` seed S)")
    args = ap.parse_args()
    device = pick_device(args.device)
    names = ["fid", "kid", "pr", "dc", "mem"]

    if args.floor:
        ev = Evaluator(args.data, args.res or 64, n_real=args.n_real, device=device)
        feats = ev.real_features()
        imgs = np.asarray(ev.real.images[inception.subset_indices(len(ev.real.images), len(feats))])
        r = metrics.compute(names, metrics.MetricInput(real=feats[0::2], fake=feats[1::2], real_images=imgs[0::2],
                                                       fake_images=imgs[1::2], seed=args.seed))
        r["n_real"], r["n_fake"] = float(len(feats[0::2])), float(len(feats[1::2]))
        print(format_table(r))
        append(row(f"real-vs-real floor (even vs odd images, {args.res or 64}²)", args.data, "—", "—", str(device), r))
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.run:  # a finished run: its log holds images seen and training time
            run, preset = Path(args.run), json.loads((Path(args.run) / "config.json").read_text())["preset"]
            last = read_metrics(run / "metrics.jsonl")[-1]
            images, wall = last["images"], last["time"]
        else:
            cfg = config.resolve(args.preset, data=args.data, out=args.out or str(Path(tmp) / "run"),
                                 max_images=args.max_images, seed=args.seed, device=args.device)
            result = train(cfg)
            run, preset, images, wall = result.run, args.preset, result.images, result.seconds
        G = load_generator(run, device=device)
        ev = Evaluator(args.data, G.cfg.res, G.cfg.channels, n_real=args.n_real, device=device)
        r = ev.of_generator(G, args.n, names, seed=args.seed)
    print(format_table(r))
    append(row(args.name or f"`{preset}` seed {args.seed}", args.data, f"{images:,}", f"{wall / 60:.1f} min", str(device), r))


if __name__ == "__main__":
    main()
