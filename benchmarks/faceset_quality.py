"""Synthetic face sets and test packs on real models (issue #30): what is kept, why the rest is not,
how fast, whether anybody from the training photos slipped through, and what keeps identity.

    python benchmarks/faceset_quality.py --model faces64=runs/faces64 --n 1000 --pairs 1000 --grid docs/images/faceset.png

Per model (``NAME=PATH``, repeatable):
1. ``facegan dataset --n N`` into a fresh folder: share kept, each rejection reason, kept faces/s,
   beside ``generate``'s speed writing the same number of faces to disk (the same machine, in turn).
2. An independent privacy check, not the code under test: every kept face re-read from disk and
   embedded with metrics.fd_face.embed, then compared in float64 with every training face by a full
   distance matrix. Prints how many kept faces lie within dlib's 0.6 of anybody (must be 0).
3. The latent move of a test pack: for each σ, ``--anchors`` kept faces moved once; the share still
   one face and the same person (distance < 0.6), and the mean distance.
4. ``--pairs K``: a test pack built (timed); every pair re-checked from the files.
5. ``--grid``: kept faces and rejected ones by reason, generated faces only (a duplicate above the kept
   face it repeats; never a training photo: none may be copied into the repository), for the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe
from PIL import Image

from facegan import faceset, testpack, viz
from facegan.data.prepare import open_prepared
from facegan.errors import FaceganError
from facegan.faceset import Sieve, open_generator, training_data
from facegan.identity import SAME_PERSON, Inspector, nearest, same_person_distance, training_bank
from facegan.metrics import fd_face
from facegan.sample import faces, generate, render, truncated_latents

SIGMAS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def independent_privacy_check(out: Path, prepared: Path) -> np.ndarray:
    """Each kept face's distance to its nearest training face, by a full float64 distance matrix."""
    names = [json.loads(line)["file_name"] for line in (out / faceset.METADATA).read_text().splitlines()]
    imgs = np.stack([np.asarray(Image.open(out / n).convert("RGB")) for n in names])
    kept = fd_face.embed(imgs)
    train = fd_face.embed(np.asarray(open_prepared(prepared).images))
    d2 = (kept ** 2).sum(1)[:, None] + (train ** 2).sum(1)[None] - 2 * kept @ train.T
    return np.sqrt(np.maximum(d2, 0)).min(1)


def sigma_table(sieve: Sieve, G, anchors: int) -> list[tuple[float, float, float, float]]:
    """(σ, share one face, share the same person (below sieve.privacy) of all, mean distance) for the first ``anchors`` kept faces."""
    imgs = faces(G, anchors * 3, seed=0)
    verdicts = sieve.sift(imgs, limit=anchors)
    kept = [(i, v) for i, v in enumerate(verdicts) if v.reason is None]
    rows = []
    for sigma in SIGMAS:
        z = torch.stack([testpack.moved(truncated_latents(1, G.cfg.z_dim, 0, i)[0], sigma, 0, i, 0, None) for i, _ in kept])
        looks = sieve.inspector.look(render(G, z))
        d = np.array([np.linalg.norm(v.embedding.astype(np.float64) - looks.embedding[j]) for j, (_, v) in enumerate(kept)])
        one = looks.faces == 1
        rows.append((sigma, one.mean(), (one & (d < sieve.privacy)).mean(), float(np.nanmean(d[one]))))
    return rows


def grid_rows(G, sieve: Sieve, per_row: int = 8, tries: int = 2000) -> tuple[np.ndarray, list[str]]:
    """Generated faces only (no training photo may be copied into the repository): a row of kept faces,
    then a row per rejection reason met in ``tries`` faces (a duplicate above the kept face it repeats)."""
    want: dict[str, list] = {"kept": [], "no_face": [], "several_faces": [], "training_identity": [], "duplicate": []}
    kept_imgs: list[np.ndarray] = []
    for start in range(0, tries, 64):
        imgs = faces(G, 64, seed=0, start=start)
        for img, v in zip(imgs, sieve.sift(imgs)):
            key = v.reason or "kept"
            if v.reason is None:
                kept_imgs.append(img)
            if len(want[key]) < per_row:
                want[key].append((img, v.embedding))
        if all(len(v) >= per_row for v in want.values()):
            break
    rows, names = [], []
    for key, items in want.items():
        if not items:
            continue
        blank = np.full_like(items[0][0], 255)
        rows.append([img for img, _ in items] + [blank] * (per_row - len(items)))
        names.append(key)
        if key == "duplicate":  # the kept face each repeats
            rows.append([kept_imgs[int(nearest(e[None], sieve.kept)[1][0])] for _, e in items] + [blank] * (per_row - len(items)))
            names.append("the kept faces they repeat")
    return np.stack([img for row in rows for img in row]), names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=0)
    ap.add_argument("--anchors", type=int, default=200)
    ap.add_argument("--grid", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--privacy", type=float, action="append", help="same-person distances to build at (repeatable; default 0.6)")
    args = ap.parse_args()
    print(describe(torch.device("cpu")))
    rows = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        tmp = Path(tempfile.mkdtemp(prefix="faceset-"))
        model, G, _ = open_generator(path, None)
        prepared = training_data(model, None, G)
        with Inspector(args.workers) as insp:
            t = time.perf_counter()
            bank = training_bank(prepared, insp, progress=False)
            print(f"{name}: training identities of {len(bank)} faces in {time.perf_counter() - t:.1f} s (0 when cached)")
        fit, share = same_person_distance(bank)
        print(f"   training photos: {share:.1%} of random pairs of different photos closer than {SAME_PERSON}; 1 % closer than {fit:.3f}")
        t = time.perf_counter()
        generate(G, tmp / "generated", args.n, progress=False)
        gen_rate = args.n / (time.perf_counter() - t)
        for privacy in args.privacy or [SAME_PERSON]:
            out = tmp / f"set-{privacy}"
            try:
                built = faceset.build(path, args.n, out, privacy=privacy, workers=args.workers, progress=False)
            except FaceganError as e:
                print(f"   --privacy {privacy}: stopped: {e}")
                rows.append((name, privacy, None, 0.0, gen_rate, None))
                continue
            d = independent_privacy_check(built.out, prepared)
            rate = built.kept / built.seconds
            rows.append((name, privacy, built, rate, gen_rate, d))
            print(f"   --privacy {privacy}: kept {built.kept} of {built.tried} ({built.kept / built.tried:.1%}) in {built.seconds:.0f} s = "
                  f"{rate:.1f} faces/s; generate to disk {gen_rate:.0f} faces/s ({rate / gen_rate:.1%}); rejected {built.rejected}; "
                  f"independent check: {int((d < privacy).sum())} kept faces within {privacy} of a training face "
                  f"(closest {d.min():.3f}), {int((d < SAME_PERSON).sum())} within {SAME_PERSON}")
            with Inspector(args.workers) as insp:
                sieve = Sieve(insp, bank, privacy=privacy)
                print(f"   latent moves ({args.anchors} kept faces, one move each): σ | one face | same person (< {privacy}) | mean distance")
                for sigma, one, same, mean in sigma_table(sieve, G, args.anchors):
                    print(f"   {sigma} | {one:.1%} | {same:.1%} | {mean:.3f}")
                if args.grid is not None and spec == args.model[0]:
                    images, names = grid_rows(G, Sieve(insp, bank, privacy=privacy))
                    viz.save_grid(images, args.grid, nrow=8)
                    print(f"   grid → {args.grid}: rows {', '.join(names)}")
            if args.pairs:
                pack = testpack.build_pack(path, args.pairs, tmp / f"pack-{privacy}", privacy=privacy, workers=args.workers,
                                           progress=False)
                print(f"   test pack: {args.pairs} + {args.pairs} pairs from {pack.tried} faces in {pack.seconds:.0f} s; "
                      f"rejected {pack.rejected}; same distance mean {pack.same.mean():.3f} max {pack.same.max():.3f}; "
                      f"different mean {pack.different.mean():.3f} min {pack.different.min():.3f}")
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| model | --privacy | tried | kept | no face | several faces | training identity | duplicate | kept faces/s | "
          "generate faces/s | ratio | kept within --privacy of training (independent) | closest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, privacy, b, rate, gen, d in rows:
        if b is None:
            print(f"| {name} | {privacy} | ≥ {faceset.GIVE_UP_TRIES} | 0 | | | | | 0 | {gen:.0f} | 0 % | — | — |")
            continue
        r = b.rejected
        print(f"| {name} | {privacy} | {b.tried} | {b.kept} ({b.kept / b.tried:.1%}) | {r['no_face']} | {r['several_faces']} | "
              f"{r['training_identity']} | {r['duplicate']} | {rate:.1f} | {gen:.0f} | {rate / gen:.1%} | {int((d < privacy).sum())} | "
              f"{d.min():.3f} |")


if __name__ == "__main__":
    main()
