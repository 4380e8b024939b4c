"""The recipe search behind the default faces (issue #13): one protocol, one command.

    python benchmarks/recipe_search.py --data ../shared/data/faces-aaf-128.zip --preset quick \\
        --images 150000 --eval-every 50000 --rows classic-b128,classic-b32 --seeds 0,1 --work runs/search

The protocol, the same for every row, so rows differ only in the recipe:
- the data is split once: every 10th face is held out and never trained on (``holdout.npy``),
  the rest is what every run trains on (``train.npy``);
- reference: 2,000 evenly spaced faces of the training split (features cached) and the whole
  held-out split; FID against the held-out faces shows over-fitting that FID against the
  training faces would reward;
- each (row, seed) trains from scratch for ``--images`` images with every option explicit (the
  seed project's recipe plus the row's changes), saving a checkpoint every ``--eval-every``
  images, and every checkpoint is scored: FID, KID, precision/recall and memorization of
  ``--n-fake`` faces of the EMA generator, so one run yields a FID-vs-images curve;
- every row keeps an EMA generator, which never feeds back into training, so each checkpoint is
  scored twice: the raw generator (the recipe as trained, "row") and the EMA one ("row + EMA");
  the last checkpoint of seed 0 also scores the EMA weights with BatchNorm statistics copied from
  G instead of recalibrated ("+ EMA, BN copied"): the EMA ablation costs no training;
- results append to ``WORK/results.jsonl`` as they land; a second call skips what is done (and
  resumes a killed run), then prints the table: mean and half-range over seeds.

``--report`` also writes ``WORK/report.md`` and the FID-vs-images / FID-vs-wall-time plots.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe

from facegan import checkpoint, config, load_generator, metrics, viz
from facegan.data.prepare import manifest_path, open_prepared, resolve_dataset
from facegan.device import pick_device
from facegan.fileio import atomic_path
from facegan.metrics import fd_face, inception
from facegan.models.dcgan import Generator
from facegan.train.loop import train
from facegan.viz import read_metrics

HOLDOUT_EVERY = 10
N_REF = 2000
EMA_KIMG = 10.0  # the EMA every row keeps (StyleGAN's half-life, ramped): it never changes training
SAMPLE_SEED = 0
ABLATE_SEED = 0  # the seed whose last checkpoint also scores the BN-copied EMA generator
GENERATORS = {"live": "", "ema": " + EMA", "bn-copied": " + EMA, BN copied"}  # table label suffix per variant

# The seed project's recipe, spelled out, so a row is exactly "classic + its own changes".
CLASSIC: dict[str, Any] = dict(recipe="classic", batch=128, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
                               loss="bce", flip=False, label_smoothing=0.0, label_noise=0.0, label_flip=0.0,
                               augment="", r1=0.0, d_norm="batch", g_up="convT", d_mbstd=False)

PROJ_AUGMENT = "color,translation,cutout"
ROWS: dict[str, dict[str, Any]] = {
    # updates per image: the batch, with the learning rate kept or scaled with √batch
    "classic-b128": {},
    "classic-b64": dict(batch=64),
    "classic-b32": dict(batch=32),
    "classic-b16": dict(batch=16),
    "b16-lr1e-4": dict(batch=16, lr_g=1e-4, lr_d=1e-4),
    "b32-lr1e-4": dict(batch=32, lr_g=1e-4, lr_d=1e-4),
    "b32-beta0": dict(batch=32, beta1=0.0),
    # loss and data
    "b32-ls": dict(batch=32, loss="ls"),
    "b32-flip": dict(batch=32, flip=True),
    "b32-ls-flip": dict(batch=32, loss="ls", flip=True),
    # SNGAN's way: no BN in D, hinge, β1 0, β2 0.9, TTUR
    "b32-sn": dict(batch=32, d_norm="spectral", loss="hinge", beta1=0.0, beta2=0.9, lr_g=1e-4, lr_d=4e-4),
    # R1 on a BN-free D; minibatch-stddev; resize-conv G
    "b32-r1": dict(batch=32, d_norm="none", r1=0.1),
    "b32-mbstd": dict(batch=32, d_mbstd=True),
    "b32-resize": dict(batch=32, g_up="resize"),
    # the EMA as a per-step decay (the 0.1.0 "modern" form) instead of a half-life in images
    "b32-ema999": dict(batch=32, ema=0.999),
    # the projected discriminator (issue #28) with what Projected GAN trains it with (hinge, DiffAugment),
    # by the side its feature net sees (64² faces upsampled) and the batch
    "b16-proj64": dict(batch=16, d_arch="projected", d_feat_res=64, loss="hinge", augment=PROJ_AUGMENT),
    "b16-proj128": dict(batch=16, d_arch="projected", d_feat_res=128, loss="hinge", augment=PROJ_AUGMENT),
    "b16-proj160": dict(batch=16, d_arch="projected", d_feat_res=160, loss="hinge", augment=PROJ_AUGMENT),
    "b32-proj128": dict(batch=32, d_arch="projected", d_feat_res=128, loss="hinge", augment=PROJ_AUGMENT),
}


def split(data: str, res: int, channels: int, work: Path) -> tuple[Path, Path]:
    """``train.npy`` (all faces but every HOLDOUT_EVERY-th) and ``holdout.npy`` (those), made once."""
    out = work / "data"
    paths = out / "train.npy", out / "holdout.npy"
    if all(manifest_path(p).is_file() for p in paths):
        return paths
    src = open_prepared(resolve_dataset(data, res, channels))
    held = np.arange(len(src.images)) % HOLDOUT_EVERY == 0
    out.mkdir(parents=True, exist_ok=True)
    for path, mask, part in ((paths[0], ~held, "train"), (paths[1], held, "holdout")):
        images = np.ascontiguousarray(src.images[mask])
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, images)
        manifest = {**src.manifest, "count": len(images), "output": str(path),
                    "fingerprint": f"{src.manifest['fingerprint']}-{part}{HOLDOUT_EVERY}"}
        manifest_path(path).write_text(json.dumps(manifest, indent=1))
    return paths


def row_config(preset: str, row: str, seed: int, data: Path, run: Path, images: int, eval_every: int) -> config.TrainConfig:
    opts = {**CLASSIC, **ROWS[row]}
    if not opts.get("ema"):
        opts["ema_kimg"] = EMA_KIMG
    steps = max(eval_every // opts["batch"], 1)
    return config.resolve(preset, data=str(data), out=str(run), max_images=images, seed=seed, ckpt_every=steps,
                          sample_every=steps, keep=10**6, **opts)


def wall_at(run: Path) -> dict[int, float]:
    """Training seconds at each logged step, summed over invocations (a resumed run restarts its clock)."""
    out, offset, last = {}, 0.0, 0.0
    for r in read_metrics(run / "metrics.jsonl"):
        if "time" not in r:
            continue
        if r["time"] < last:
            offset += last
        last = r["time"]
        out[r["step"]] = offset + r["time"]
    return out


def generators(path: Path, variants: tuple[str, ...]) -> dict[str, Generator]:
    """The checkpoint's EMA generator ("ema"), raw one ("live") and EMA weights with G's BN statistics."""
    out = {v: load_generator(path, ema=v != "live") for v in variants}
    if "bn-copied" in out:  # the running statistics G collected for its own, live weights
        live = checkpoint.module_state(checkpoint.load(path)[0], "G")
        out["bn-copied"].load_state_dict({k: t for k, t in live.items() if "running_" in k or "num_batches" in k},
                                         strict=False)
    return out


@dataclass
class Refs:
    """The two real sets every score compares with: 2,000 training faces and the held-out split, as
    Inception features and pixels, and what the face-space metrics derive from each (computed once)."""

    ref: np.ndarray
    hold: np.ndarray
    ref_images: np.ndarray
    hold_images: np.ndarray
    ref_memo: dict = field(default_factory=dict)
    hold_memo: dict = field(default_factory=dict)


def score(G: Generator, n: int, refs: Refs, backend: str) -> dict:
    """Inception metrics against the training faces, FID and fd_face against the held-out ones too,
    and the metrics outside ImageNet's space (faces, fd_face, swd): all on the same n faces."""
    faces = G.sample(n, seed=SAMPLE_SEED)
    feats = inception.extract(faces, progress=False, backend=backend, device=pick_device("auto"))
    r = metrics.compute(["fid", "kid", "pr", "mem", "faces", "swd"],
                        metrics.MetricInput(real=refs.ref, fake=feats, real_images=refs.ref_images, fake_images=faces,
                                            seed=SAMPLE_SEED, memo=refs.ref_memo))
    emb = fd_face.embed(faces)  # once for both real sets: dlib's network is the slow part of a score
    for memo, images, key in ((refs.ref_memo, refs.ref_images, "fd_face"), (refs.hold_memo, refs.hold_images, "fd_face_holdout")):
        r[key] = fd_face.fd_face(fd_face.reference(memo, images), emb)
    r["fid_holdout"] = metrics.compute(["fid"], metrics.MetricInput(real=refs.hold, fake=feats))["fid"]
    return r


def floor(refs: Refs, path: Path) -> None:
    """What real faces score against real faces: the training reference against the held-out split,
    on every metric of the table that does not need a generator (written once)."""
    if path.is_file():
        return
    r = metrics.compute(["fid", "faces", "fd_face", "swd"],
                        metrics.MetricInput(real=refs.ref, fake=refs.hold, real_images=refs.ref_images,
                                            fake_images=refs.hold_images, seed=SAMPLE_SEED, memo=refs.ref_memo))
    path.write_text(json.dumps({**r, "n_holdout": len(refs.hold)}, indent=1))


def load_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def evaluate_run(run: Path, key: dict, results: Path, refs: Refs, n: int, backend: str, every: int,
                 wanted: tuple[str, ...] = tuple(GENERATORS), last_only: bool = False) -> None:
    """Score the run's checkpoints not yet in ``results``: the last one, and the ones nearest each
    multiple of ``every`` images (not with ``last_only``; one a few steps before the last is skipped);
    the ``wanted`` generators only (the BN-copied ablation on seed ABLATE_SEED's last one)."""
    done = {(r["images"], r["variant"]) for r in load_results(results) if all(r[k] == v for k, v in key.items())}
    metas = [(p, checkpoint.load(p)[1]) for p in checkpoint.list_checkpoints(run)]
    ckpts = [(p, int(m["images"]), int(m["step"])) for p, m in metas]
    near = lambda images: round(images / every) > 0 and abs(images - round(images / every) * every) < every / 4  # noqa: E731
    ckpts = [c for k, c in enumerate(ckpts)
             if k == len(ckpts) - 1 or (near(c[1]) and ckpts[-1][1] - c[1] >= every / 2 and not last_only)]
    walls = wall_at(run)
    for k, (path, images, step) in enumerate(ckpts):
        final = k == len(ckpts) - 1
        variants = ("ema", "live", "bn-copied") if final and key["seed"] == ABLATE_SEED else ("ema", "live")
        todo = [v for v in variants if (images, v) not in done and v in wanted]
        for v, G in generators(path, tuple(todo)).items():
            t = time.time()
            r = score(G, n, refs, backend=backend)
            rec = {**key, "images": images, "step": step, "wall_s": round(walls.get(step, float("nan")), 1),
                   "variant": v, "n_fake": n, **{name: float(x) for name, x in r.items()}, "eval_s": round(time.time() - t, 1)}
            with open(results, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"  {key['row']} s{key['seed']} {images:>7,} img {v:<9} FID {r['fid']:7.2f}  held-out {r['fid_holdout']:7.2f}"
                  f"  KID×10³ {r['kid_mean'] * 1e3:6.2f}  P {r['precision']:.3f} R {r['recall']:.3f}  fd_face "
                  f"{r['fd_face']:.2f}  faces {r['faces']:.3f} (real {r['faces_real']:.3f})  SWD {r['swd']:.1f}", flush=True)


def spread(xs: list[float], digits: int = 1) -> str:
    """Mean, and ± half the range over seeds when there are several."""
    m = float(np.mean(xs))
    return f"{m:.{digits}f}" if len(xs) == 1 else f"{m:.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


def best(recs: list[dict]) -> str:
    """The collapse guard: the lowest mean FID over the curve, and where it was reached."""
    by_images: dict[int, list[float]] = {}
    for r in recs:
        by_images.setdefault(r["images"], []).append(r["fid"])
    images, fids = min(by_images.items(), key=lambda kv: np.mean(kv[1]))
    return f"{np.mean(fids):.1f} at {images / 1000:.0f}k"


def table(recs: list[dict], preset: str) -> str:
    """Per row and generator, at the row's last budget: mean ± half-range over seeds (the spread a
    difference must beat). A row without "+ EMA" is the recipe as trained (its raw G)."""
    rows = sorted({r["row"] for r in recs if r["preset"] == preset}, key=list(ROWS).index)
    lines = ["| row | options | seeds | images | wall min | FID | FID held-out | KID ×10³ | precision | recall "
             "| fd_face | fd_face held-out | faces (real) | SWD ×10³ | best FID on the curve | memorized |", "|" + "---|" * 16]
    col = lambda rs, k, s=1.0, d=1: spread([r[k] * s for r in rs], d)  # noqa: E731
    face = lambda rs, k, d=1: spread([r[k] for r in rs], d) if all(k in r for r in rs) else "—"  # noqa: E731 - not in older rows
    for row in rows:
        mine = [r for r in recs if r["row"] == row and r["preset"] == preset]
        last = max(r["images"] for r in mine)
        opts = ", ".join(f"{k}={v}" for k, v in ROWS[row].items()) or "—"
        for variant, suffix in GENERATORS.items():
            curve = [r for r in mine if r["variant"] == variant]
            e = [r for r in curve if r["images"] == last]
            if not e:
                continue
            lines.append(f"| {row}{suffix} | {opts} | {','.join(str(r['seed']) for r in e)} | {last:,} "
                         f"| {col(e, 'wall_s', 1 / 60)} | {col(e, 'fid')} | {col(e, 'fid_holdout')} "
                         f"| {col(e, 'kid_mean', 1e3)} | {col(e, 'precision', d=3)} | {col(e, 'recall', d=3)} "
                         f"| {face(e, 'fd_face', 2)} | {face(e, 'fd_face_holdout', 2)} | {face(e, 'faces', 3)} ({face(e, 'faces_real', 3)}) "
                         f"| {face(e, 'swd')} | {best(curve)} | {col(e, 'mem_fraction', 100, 2)} % |")
    return "\n".join(lines)


def curve(recs: list[dict], preset: str, row: str, variant: str, key: str = "fid") -> list[tuple[float, float, float]]:
    """(images, wall seconds, ``key``) of a row's generator, each the mean over seeds, by images seen."""
    pts = [r for r in recs if r["preset"] == preset and r["row"] == row and r["variant"] == variant and key in r]
    return [(x, float(np.mean([r["wall_s"] for r in pts if r["images"] == x])),
             float(np.mean([r[key] for r in pts if r["images"] == x]))) for x in sorted({r["images"] for r in pts})]


def time_to(points: list[tuple[float, float, float]], fid: float) -> float | None:
    """Wall seconds at which a curve first reaches ``fid`` (log-FID interpolated between points)."""
    for (_, t0, f0), (_, t1, f1) in zip(points, points[1:]):
        if f1 <= fid <= f0:
            return t0 + (t1 - t0) * (np.log(f0) - np.log(fid)) / (np.log(f0) - np.log(f1))
    return points[0][1] if points and points[0][2] <= fid else None


PLOTTED = {"fid": f"FID vs {N_REF:,} training faces", "fd_face_holdout": "fd_face vs the held-out faces (×100)"}


def plots(recs: list[dict], preset: str, out: Path) -> Path:
    """FID and fd_face (mean over seeds) against images seen and against training wall time: solid
    lines for the EMA generator, dashed for the raw one, wherever a row has at least two points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PLOTTED), 2, figsize=(11, 4.4 * len(PLOTTED)), squeeze=False)
    for i, row in enumerate(sorted({r["row"] for r in recs if r["preset"] == preset}, key=list(ROWS).index)):
        for variant, style in (("ema", "o-"), ("live", "s--")):
            for ax, key in zip(axes, PLOTTED):
                pts = curve(recs, preset, row, variant, key)
                if len(pts) < 2:
                    continue
                images, wall, y = zip(*pts)
                label = row + GENERATORS[variant]
                ax[0].plot([x / 1000 for x in images], y, style, color=f"C{i}", label=label)
                ax[1].plot([t / 60 for t in wall], y, style, color=f"C{i}", label=label)
    for ax, title in zip(axes, PLOTTED.values()):
        ax[0].set_xlabel("thousand images seen")
        ax[1].set_xlabel("training wall time (min)")
        for a in ax:
            a.set_ylabel(title)
            a.set_yscale("log")
            a.grid(alpha=0.3, which="both")
        ax[1].legend(fontsize=7)
    fig.tight_layout()
    path = out / f"fid_curves_{preset}.png"
    fig.savefig(path, dpi=110)
    return path


def grids(work: Path, preset: str, specs: list[str], seed: int, out: Path, at: int | None = None, n: int = 36,
          at_min: float | None = None) -> Path:
    """The same ``n`` latents through each ``row[:variant]``'s generator (seed ``seed``; variant live,
    ema or bn-copied, default ema) at the checkpoint nearest ``at`` images, or nearest ``at_min``
    minutes of training (None: the last), side by side and labelled."""
    from PIL import Image, ImageDraw

    panels, scale = [], max(1, 64 // config.PRESETS[preset].model.res)  # 32² faces shown at 2×
    for spec in specs:
        row, _, variant = spec.partition(":")
        variant = variant or "ema"
        run = work / preset / f"{row}-s{seed}"
        ckpts, walls = checkpoint.list_checkpoints(run), wall_at(run)
        if at_min is not None:
            ckpt = min(ckpts, key=lambda p: abs(walls.get(int(checkpoint.read_meta(p)["step"]), 1e9) - 60 * at_min))
        else:
            ckpt = ckpts[-1] if at is None else min(ckpts, key=lambda p: abs(int(checkpoint.load(p)[1]["images"]) - at))
        G = generators(ckpt, (variant,))[variant]
        img = Image.fromarray(viz.grid(G.sample(n, seed=SAMPLE_SEED)))
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        images = int(checkpoint.load(ckpt)[1]["images"])
        panel = Image.new("RGB", (img.width, img.height + 18), "white")
        minutes = walls.get(int(checkpoint.read_meta(ckpt)["step"]), float("nan")) / 60
        ImageDraw.Draw(panel).text((4, 3), f"{row}{GENERATORS[variant]}, {images:,} images, {minutes:.0f} min", fill="black")
        panel.paste(img, (0, 18))
        panels.append(panel)
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, (i * (p.width + 8), 0))
    path = out / f"grids_{preset}{'' if at_min is None else f'_{at_min:g}min'}.png"
    sheet.save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="quick", help="the net (its recipe is replaced by CLASSIC + the row)")
    ap.add_argument("--images", type=int, default=150_000, help="images seen per run")
    ap.add_argument("--eval-every", type=int, default=25_000, help="images between scored checkpoints")
    ap.add_argument("--n-fake", type=int, default=2000, help="generated faces per score")
    ap.add_argument("--rows", default="classic-b128,classic-b32", help=f"comma list of: {', '.join(ROWS)}")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--work", type=Path, default=Path("runs/search"))
    ap.add_argument("--backend", default="torch", help=f"Inception backend: {', '.join(inception.BACKENDS)} (same features)")
    ap.add_argument("--variants", default=",".join(GENERATORS), help="generators to score: live (the recipe as trained), "
                    "ema, bn-copied (seed 0's last checkpoint); a later call with more scores only what is missing")
    ap.add_argument("--last-only", action="store_true", help="score only each run's last checkpoint (a later call without it fills in the curve)")
    ap.add_argument("--report", action="store_true", help="only print the table and write report.md, plots and grids")
    ap.add_argument("--against", default=None, help="A:VARIANT,B:VARIANT — when A's curve reaches B's final FID (wall time)")
    ap.add_argument("--grid-at", type=int, default=None, help="with --report: show the checkpoints nearest this many images")
    ap.add_argument("--grid-at-min", type=float, default=None, help="with --report: also a sheet of the checkpoints nearest this many training minutes")
    ap.add_argument("--grid-rows", default=None, help="with --report: ROW[:live|ema|bn-copied],... whose faces to show side by side (default --rows, EMA G)")
    args = ap.parse_args()
    rows, seeds = args.rows.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    model = config.PRESETS[args.preset].model
    work, results = args.work, args.work / "results.jsonl"
    if not (args.report or args.against):  # either one only reads results.jsonl
        train_npy, hold_npy = split(args.data, model.res, model.channels, work / f"r{model.res}")
        train_imgs = open_prepared(train_npy).images
        refs = Refs(inception.reference_features(train_npy, N_REF, backend=args.backend, device=pick_device("auto")),
                    inception.reference_features(hold_npy, None, backend=args.backend, device=pick_device("auto")),
                    np.asarray(train_imgs[inception.subset_indices(len(train_imgs), N_REF)]),
                    np.asarray(open_prepared(hold_npy).images))
        for row in rows:
            for seed in seeds:
                run = work / args.preset / f"{row}-s{seed}"
                cfg = row_config(args.preset, row, seed, train_npy, run, args.images, args.eval_every)
                have = checkpoint.list_checkpoints(run)
                if not have or int(checkpoint.load(have[-1])[1]["images"]) < args.images:
                    print(f"== training {row} seed {seed} ({args.images:,} images)", flush=True)
                    train(cfg, resume=bool(have), progress=False)
                key = {"preset": args.preset, "row": row, "seed": seed}
                evaluate_run(run, key, results, refs, args.n_fake, args.backend, args.eval_every,
                             tuple(args.variants.split(",")), args.last_only)
        floor(refs, work / f"floor-{model.res}.json")
    recs = load_results(results)
    text = f"{describe(pick_device('auto'))}\n\n{table(recs, args.preset)}"
    if (work / f"floor-{model.res}.json").is_file():
        f = json.loads((work / f"floor-{model.res}.json").read_text())
        text += (f"\n\nThe floor, {N_REF:,} training faces vs the {f['n_holdout']:,} held-out ones: FID {f['fid']:.1f}, "
                 f"fd_face {f['fd_face']:.2f}, SWD ×10³ {f['swd']:.1f}, faces {f['faces_real']:.3f} (held-out {f['faces']:.3f})")
    if args.against:  # "ROW:VARIANT,ROW:VARIANT": how soon the first reaches the second's final FID
        (a, va), (b, vb) = (spec.split(":") for spec in args.against.split(","))
        mine, ref = curve(recs, args.preset, a, va), curve(recs, args.preset, b, vb)
        t = time_to(mine, ref[-1][2])
        text += (f"\n\n{a}{GENERATORS[va]} reaches {b}{GENERATORS[vb]}'s final FID {ref[-1][2]:.1f} "
                 f"({ref[-1][0]:,.0f} images, {ref[-1][1] / 60:.1f} min) after "
                 + (f"{t / 60:.1f} min: {t / ref[-1][1]:.2f} of its wall time" if t is not None else "— (not reached)"))
    print(text)
    if args.report:
        (work / "report.md").write_text(text + "\n")
        specs = (args.grid_rows or args.rows).split(",")
        sheet = grids(work, args.preset, specs, seeds[0], work, args.grid_at)
        if args.grid_at_min is not None:
            sheet = f"{sheet}, {grids(work, args.preset, specs, seeds[0], work, at_min=args.grid_at_min)}"
        print(f"wrote {work / 'report.md'}, {plots(recs, args.preset, work)} and {sheet}")


if __name__ == "__main__":
    main()
