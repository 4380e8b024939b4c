"""Which detector set-up facegan.identity uses: dlib's HOG detector on aligned face crops, by size.

    python benchmarks/detect_setup.py --data <prepared 64² AAF .npy> --model runs/faces64 -n 500

HOG's window is 80 px, so a 64² aligned crop must be enlarged; each set-up below is run on ``n``
real faces (evenly spaced) and ``n`` faces of the model, threshold 0, and the share found as exactly
one face, the share with several, and the time per face are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import describe
from PIL import Image

from facegan import saved
from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.facemodels import require
from facegan.metrics import face_detect
from facegan.sample import faces


def resized(side: int):
    return lambda im: np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BILINEAR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("-n", type=int, default=500)
    args = ap.parse_args()
    print(describe(torch.device("cpu")))
    G = saved.open(args.model).generator("cpu")
    images = open_prepared(resolve_dataset(args.data, G.cfg.res, G.cfg.channels, progress=False)).images
    real = np.asarray(images[np.arange(args.n) * len(images) // args.n])
    fake = faces(G, args.n, seed=0)
    det = require("dlib", "this script").get_frontal_face_detector()
    setups = [(f"bare {G.cfg.res}²", lambda im: im, 0), (f"bare {G.cfg.res}², upsampled once by dlib", lambda im: im, 1),
              ("resized to 128²", resized(128), 0), ("resized to 160²", resized(160), 0),
              ("resized to 160², padded 25 % gray (the faces metric)", face_detect.padded, 0)]
    print("| set-up | real: one face | real: several | generated: one face | generated: several | ms a face |")
    print("|---|---|---|---|---|---|")
    for name, prep, up in setups:
        row, ms = [], []
        for imgs in (real, fake):
            t = time.perf_counter()
            found = np.array([len(det.run(prep(im), up, 0.0)[0]) for im in imgs])
            ms.append(1000 * (time.perf_counter() - t) / len(imgs))
            row += [f"{np.mean(found == 1):.1%}", f"{np.mean(found > 1):.1%}"]
        print(f"| {name} | {' | '.join(row)} | {np.mean(ms):.1f} |")


if __name__ == "__main__":
    main()
