"""The numbers behind facegan.identity: what the training identities cost, the near-duplicate
threshold, how far apart real people are, and which nearest-neighbour search to use.

    python benchmarks/identity_search.py --data ../shared/data/faces-aaf-128.zip --res 64

1. The training bank: every face of the prepared dataset embedded (timed on a cold cache; cached afterwards).
2. Same face again: each of ``-n`` faces against its own mirror image, a copy shifted by one
   pixel and a JPEG (quality 75) copy. A near-duplicate threshold must sit above these.
3. Different people: every held-out face (every ``--holdout``-th face, left out of the bank) to its
   nearest training face, and training faces to their nearest *other* training face. The share
   below dlib's same-person 0.6 is how often a real new person would be refused by the privacy check.
4. Search: ``--queries`` descriptors against a bank of ``--bank-size`` (the real bank tiled with
   noise), brute force in torch (float32 matmul) against scipy's cKDTree; extrapolated to 100k
   queries.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from machine import describe
from PIL import Image

from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.identity import DUPLICATE, SAME_PERSON, Inspector, nearest, training_bank


def pct(x: np.ndarray) -> str:
    p = np.percentile(x, [1, 5, 50, 95, 99])
    return " / ".join(f"{v:.3f}" for v in p) + f" (min {x.min():.3f}, max {x.max():.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("-n", type=int, default=500, help="faces for the same-face copies")
    ap.add_argument("--holdout", type=int, default=10, help="every k-th face is a held-out person")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--bank-size", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    print(describe(torch.device("cpu")))
    path = resolve_dataset(args.data, args.res, 3, progress=False)
    images = open_prepared(path).images
    n = len(images)
    with Inspector(args.workers) as insp:
        t = time.perf_counter()
        emb = training_bank(path, insp, progress=False)  # a cache hit times nothing: run it on a cold cache
        s = time.perf_counter() - t
        print(f"1. embedding {n} faces at {args.res}² (torch, {torch.get_num_threads()} threads): {s:.0f} s, "
              f"{1000 * s / n:.1f} ms a face; 200k faces: {200_000 * s / n / 60:.0f} min on this machine")
        pick = np.arange(args.n) * n // args.n
        faces = np.asarray(images[pick])
        mirror = faces[:, :, ::-1].copy()
        shifted = np.roll(faces, 1, axis=2)

        def jpeg(img: np.ndarray) -> np.ndarray:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=75)
            return np.asarray(Image.open(buf).convert("RGB"))
        jpg = np.stack([jpeg(f) for f in faces])
        same = {name: np.linalg.norm(insp.embed(x) - emb[pick], axis=1)
                for name, x in (("mirror", mirror), ("shift 1 px", shifted), ("JPEG q75", jpg))}
    print(f"2. same face again ({args.n} faces), distance percentiles 1/5/50/95/99:")
    for name, d in same.items():
        print(f"   {name:>10}: {pct(d)}")
    allsame = np.concatenate(list(same.values()))
    held = np.arange(0, n, args.holdout)
    train = np.setdiff1d(np.arange(n), held)
    d_held, _ = nearest(emb[held], emb[train])
    order = np.arange(len(train))
    d_self = np.empty(len(train))
    for s in range(0, len(train), 2048):  # nearest other: mask the face itself
        q = emb[train[s:s + 2048]].astype(np.float64)
        sq = ((q ** 2).sum(1)[:, None] + (emb[train].astype(np.float64) ** 2).sum(1)[None] - 2 * q @ emb[train].T.astype(np.float64))
        sq[np.arange(len(q)), order[s:s + 2048]] = np.inf
        d_self[s:s + 2048] = np.sqrt(np.maximum(sq.min(1), 0))
    print("3. different people, distance percentiles 1/5/50/95/99:")
    print(f"   held-out face → nearest of {len(train)} training faces: {pct(d_held)}; "
          f"below {SAME_PERSON}: {np.mean(d_held < SAME_PERSON):.1%}")
    print(f"   training face → nearest other training face: {pct(d_self)}; below {SAME_PERSON}: "
          f"{np.mean(d_self < SAME_PERSON):.1%}; below DUPLICATE {DUPLICATE}: {np.mean(d_self < DUPLICATE):.2%}")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, 20_000), rng.integers(0, n, 20_000)
    keep = a != b
    d_pair = np.linalg.norm(emb[a[keep]].astype(np.float64) - emb[b[keep]], axis=1)
    print(f"   random pairs of different faces: {pct(d_pair)}; below {SAME_PERSON}: {np.mean(d_pair < SAME_PERSON):.1%}")
    print(f"   same-face copies above DUPLICATE {DUPLICATE}: {np.mean(allsame >= DUPLICATE):.2%}")

    reps = -(-args.bank_size // n)
    bank = np.concatenate([emb + rng.normal(0, 0.02, emb.shape).astype(np.float32) for _ in range(reps)])[:args.bank_size]
    q = emb[rng.integers(0, n, args.queries)] + rng.normal(0, 0.05, (args.queries, 128)).astype(np.float32)
    t = time.perf_counter()
    d_brute, i_brute = nearest(q, bank)
    s_brute = time.perf_counter() - t
    print(f"4. {args.queries} queries vs {len(bank)}: brute force (torch f32 matmul) {s_brute:.2f} s "
          f"→ 100k queries {10 * s_brute * 10_000 / args.queries:.0f} s")
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        print("   scipy not installed: cKDTree not timed")
        return
    t = time.perf_counter()
    tree = cKDTree(bank)
    s_build = time.perf_counter() - t
    sub = min(args.queries, 1000)
    t = time.perf_counter()
    d_tree, _ = tree.query(q[:sub], k=1, workers=-1)
    s_tree = time.perf_counter() - t
    print(f"   cKDTree: build {s_build:.1f} s, {sub} queries {s_tree:.2f} s → 100k queries "
          f"{s_build + s_tree * 100_000 / sub:.0f} s; same answers: {np.allclose(d_tree, d_brute[:sub], atol=1e-4)}")


if __name__ == "__main__":
    main()
