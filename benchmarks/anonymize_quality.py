"""How well ``facegan anonymize`` works on real faces: detection, identity removed, still a face,
speed — printed as markdown tables for docs/benchmarks.md.

    python benchmarks/anonymize_quality.py --data ../shared/data/faces-aaf-128.zip --model runs/aaf32 \
        --scenes 60 --faces 2 --seed 0

The real faces are photos of the dataset pasted (feathered edges) at 90–200 px into 640×480
scenes of random colour fields, so every face's position is known. Nothing here is written
into the repository: the tables print, the scenes stay in memory.

1. Template: the median eye and mouth anchors of the dataset's own faces (HOG box + 68
   landmarks on each photo enlarged to 256²) — the value of ``align.DEFAULT_TEMPLATE``.
2. Detection, per detector: recall (a pasted face with a detection centred in its middle 60 %
   and 25–100 % of its side), precision (detections that are such a match), both over all
   candidates and over the confident ones, and seconds per scene; and how each detector's box
   sits relative to HOG's on the same face (``detect.BOX_TO_HOG``).
3. Anonymization, per method (auto = the shipping fail-closed pipeline; replace without the
   identity check; blur; pixelate), over the faces the default detector found: the share still
   within dlib's same-person distance (0.6) of the original; for reference, the share for the
   same photo mirrored (AAF has no identity labels, so there are no two-photo pairs of one person)
   and for two different photos (nearly always two people: the threshold's false-match rate here); the share
   detected again by another detector; FID of the 128² crops against the original crops; and
   seconds per scene and faces per second.
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facegan.anonymize import align, detect
from facegan.anonymize.batch import build
from facegan.anonymize.detect import Face
from facegan.metrics.fid import fid_of_features
from facegan.metrics.inception import extract

from machine import describe

W, H = 640, 480
CROP = 128  # the side of the crops FID compares


def load_faces(path: Path, n: int, seed: int) -> np.ndarray:
    """n photos (uint8 (n, 128, 128, 3)) drawn at random from a zip of images."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(i.filename for i in zf.infolist() if i.filename.lower().endswith((".jpg", ".png", ".jpeg")))
        pick = np.random.default_rng(seed).choice(len(names), n, replace=False)
        return np.stack([np.asarray(Image.open(io.BytesIO(zf.read(names[i]))).convert("RGB").resize((CROP, CROP)))
                         for i in pick])


def background(rng: np.random.Generator) -> np.ndarray:
    """A 640×480 scene without faces: a smooth colour field with a few flat rectangles."""
    cv2 = detect.require("cv2")
    field = cv2.resize(rng.uniform(30, 225, (6, 8, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(2, 6)):
        x, y = rng.integers(0, W - 40), rng.integers(0, H - 40)
        field[y:y + rng.integers(20, 160), x:x + rng.integers(20, 200)] = rng.uniform(20, 235, 3)
    field += rng.normal(0, 4, field.shape).astype(np.float32)
    return np.clip(field, 0, 255).astype(np.uint8)


def scenes(faces: np.ndarray, per_scene: int, seed: int) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]], list[int]]]:
    """(image, the pasted squares, which photo each is) per scene; photos pasted without overlap."""
    cv2 = detect.require("cv2")
    rng = np.random.default_rng(seed)
    ramp = np.minimum(np.arange(CROP), np.arange(CROP)[::-1]) / (0.12 * CROP)
    alpha = np.clip(np.minimum.outer(ramp, ramp), 0, 1)[..., None]  # square, edges feathered over 12 %
    out, k = [], 0
    while k < len(faces):
        img = background(rng).astype(np.float64)
        boxes, which = [], []
        for _ in range(per_scene):
            if k == len(faces):
                break
            for _ in range(100):
                s = int(rng.integers(90, 201))
                x, y = int(rng.integers(4, W - s - 4)), int(rng.integers(4, H - s - 4))
                box = (x, y, x + s, y + s)
                if all(detect.iou(box, b) == 0 and not _touch(box, b) for b in boxes):
                    break
            else:
                continue
            face = cv2.resize(faces[k], (s, s), interpolation=cv2.INTER_AREA).astype(np.float64)
            a = cv2.resize(alpha, (s, s))[..., None]
            img[y:y + s, x:x + s] = a * face + (1 - a) * img[y:y + s, x:x + s]
            boxes.append(box)
            which.append(k)
            k += 1
        out.append((np.clip(img + 0.5, 0, 255).astype(np.uint8), boxes, which))
    return out


def _touch(a, b, gap: int = 10) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def matches(found: Face, truth: tuple[int, int, int, int]) -> bool:
    """A detection of the pasted photo ``truth``: centred in its middle 60 %, 25–100 % of its side."""
    x0, y0, x1, y1 = truth
    s = x1 - x0
    cx, cy = (found.box[0] + found.box[2]) / 2, (found.box[1] + found.box[3]) / 2
    inside = x0 + 0.2 * s <= cx <= x1 - 0.2 * s and y0 + 0.2 * s <= cy <= y1 - 0.2 * s
    return inside and 0.25 * s <= max(found.box[2] - found.box[0], found.box[3] - found.box[1]) <= 1.0 * s


def template_table(faces: np.ndarray) -> list[str]:
    found = align.read_anchors(faces)  # what align.measure_template does with a model's faces
    t = np.median(np.stack(found), axis=0)
    spread = np.percentile(np.stack(found), [25, 75], axis=0)
    return ["| anchor | x | y | IQR x | IQR y |", "|---|---|---|---|---|",
            *[f"| {name} | {t[i, 0]:.3f} | {t[i, 1]:.3f} | {spread[0, i, 0]:.3f}–{spread[1, i, 0]:.3f} | "
              f"{spread[0, i, 1]:.3f}–{spread[1, i, 1]:.3f} |" for i, name in enumerate(("left eye", "right eye", "mouth"))],
            f"\n(read on {len(found)} of {len(faces)} photos)"]


def detection_table(scn, detectors: list[str], upsample: int) -> tuple[list[str], dict[str, list[list[Face]]]]:
    rows = ["| detector | upsample | faces | recall (all candidates) | precision (all) | recall (confident) | "
            "precision (confident) | s / 640×480 scene |", "|---|---|---|---|---|---|---|---|"]
    found_by: dict[str, list[list[Face]]] = {}
    for name in detectors:
        find = detect.detector(name, upsample)
        find(scn[0][0])  # warm-up (weights load)
        t, per_scene = time.perf_counter(), []
        for img, _, _ in scn:
            per_scene.append(find(img))
        sec = (time.perf_counter() - t) / len(scn)
        found_by[name] = per_scene
        cells = []
        for only_confident in (False, True):
            tp = n_true = n_found = hit = 0
            for (img, boxes, _), faces in zip(scn, per_scene):
                faces = [f for f in faces if f.confident or not only_confident]
                n_true, n_found = n_true + len(boxes), n_found + len(faces)
                tp += sum(any(matches(f, b) for f in faces) for b in boxes)
                hit += sum(any(matches(f, b) for b in boxes) for f in faces)
            cells += [f"{tp / n_true:.1%}", f"{hit / max(1, n_found):.1%} ({n_found - hit} false)"]
        rows.append(f"| {name} | {upsample} | {n_true} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {sec:.2f} |")
    return rows, found_by


def box_offsets(scn, found_by: dict[str, list[list[Face]]]) -> list[str]:
    """Median (dx, dy, size) of each detector's box relative to HOG's box of the same face (fractions of the HOG side)."""
    rows = ["| detector | faces found by both | centre dx | centre dy | size vs HOG |", "|---|---|---|---|---|"]
    for name, per_scene in found_by.items():
        if name == "hog" or "hog" not in found_by:
            continue
        rel = []
        for (_, boxes, _), hogs, others in zip(scn, found_by["hog"], per_scene):
            for b in boxes:
                h = next((f for f in hogs if matches(f, b)), None)
                o = next((f for f in others if matches(f, b)), None)
                if h and o:
                    so = max(o.box[2] - o.box[0], o.box[3] - o.box[1])
                    sh = max(h.box[2] - h.box[0], h.box[3] - h.box[1])
                    rel.append((((h.box[0] + h.box[2]) - (o.box[0] + o.box[2])) / 2 / so,
                                ((h.box[1] + h.box[3]) - (o.box[1] + o.box[3])) / 2 / so, sh / so))
        m = np.median(np.array(rel), axis=0) if rel else [float("nan")] * 3
        rows.append(f"| {name} | {len(rel)} | {m[0]:+.3f} | {m[1]:+.3f} | {m[2]:.3f} |")
    return rows


def crop(img: np.ndarray, box) -> np.ndarray:
    cv2 = detect.require("cv2")
    x0, y0, x1, y1 = box
    return cv2.resize(img[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_AREA)


def embed(img: np.ndarray, box, f: Face) -> np.ndarray:
    """dlib's embedding of whatever is at ``box`` in ``img`` (landmarks read there afresh)."""
    return detect.embedding(img, detect.landmarks(img, Face(tuple(box), f.score, f.detector)))


def identity(img: np.ndarray, out: np.ndarray, f: Face) -> float:
    """dlib embedding distance between the face in ``img`` and whatever is at the same box in ``out``."""
    return float(np.linalg.norm(embed(img, f.box, f) - embed(out, f.box, f)))


def anonymize_table(scn, args) -> list[str]:
    """Each method over the faces the default detector matched to a pasted photo."""
    default, other = detect.DEFAULT_DETECTOR, args.redetect
    refind = detect.detector(other, args.upsample)
    methods = {"auto (shipping)": dict(mode="auto"), "replace, no identity check": dict(mode="replace", verify=False),
               "blur": dict(mode="blur"), "pixelate": dict(mode="pixelate")}
    rows = [f"| method | faces | within 0.6 of the original (same person) | detected again by {other} | FID of crops vs originals | "
            "s / scene | faces / s | how (auto) |", "|---|---|---|---|---|---|---|---|"]
    real_crops, mirrored, originals = [], [], []
    for label, kw in methods.items():
        verify = kw.pop("verify", True)
        anon, _ = build(args.model if kw["mode"] in ("auto", "replace") else None, args.upscaler, detector=default,
                        seed=args.seed, steps=args.steps, starts=args.starts, upsample=args.upsample, **kw)
        anon.verify = verify
        dists, again, crops, how = [], [], [], {}
        sec, n_faces = 0.0, 0
        for k, (img, boxes, _) in enumerate(scn):
            t = time.perf_counter()  # timed: what `facegan anonymize` does to a photo (detect, then each face)
            found = anon.detect(img)
            out, recs = anon.image(img, keys=(k,), faces=found)
            sec += time.perf_counter() - t
            faces = [f for f in found if any(matches(f, b) for b in boxes)]  # scored: the pasted photos' faces
            n_faces += len(found)
            for r in recs:
                key = r.method if r.attempt is None else f"{r.method} (attempt {r.attempt + 1})"
                how[key] = how.get(key, 0) + 1
            seen_again = refind(out)
            for f in faces:
                b = next(b for b in boxes if matches(f, b))
                dists.append(identity(img, out, f))
                again.append(any(matches(g, b) for g in seen_again))
                crops.append(crop(out, b))
                if label == "auto (shipping)":
                    real_crops.append(crop(img, b))
                    flipped = np.ascontiguousarray(img[:, ::-1])
                    original = embed(img, f.box, f)
                    mirror = embed(flipped, (W - f.box[2], f.box[1], W - f.box[0], f.box[3]), f)
                    mirrored.append(float(np.linalg.norm(original - mirror)))
                    originals.append(original)
        feats_real = extract(np.stack(real_crops), progress=False)
        fid = fid_of_features(feats_real, extract(np.stack(crops), progress=False))
        d = np.array(dists)
        rows.append(f"| {label} | {len(d)} | {np.mean(d < detect.SAME_PERSON):.1%} (median distance {np.median(d):.2f}) | "
                    f"{np.mean(again):.1%} | {fid:.1f} | {sec / len(scn):.2f} | {n_faces / sec:.2f} | "
                    f"{', '.join(f'{m} {n}' for m, n in sorted(how.items()))} |")
    m = np.array(mirrored)
    rows.append(f"| (reference) the same photo mirrored | {len(m)} | {np.mean(m < detect.SAME_PERSON):.1%} "
                f"(median distance {np.median(m):.2f}) | — | — | — | — | — |")
    e = np.stack(originals)
    pairs = np.linalg.norm(e[:, None] - e[None], axis=-1)[np.triu_indices(len(e), 1)]
    rows.append(f"| (reference) two different photos of the dataset | {len(pairs)} pairs | {np.mean(pairs < detect.SAME_PERSON):.1%} "
                f"(median distance {np.median(pairs):.2f}) | — | — | — | — | — |")
    return rows


def picture(args, path: Path) -> str:
    """before | after of a scene of faces the model *generated* (enlarged ×4 by bicubic) — no real
    photo goes into the repository — anonymized by the shipping pipeline; written to ``path``."""
    from facegan import sample

    cv2 = detect.require("cv2")
    anon, _ = build(args.model, args.upscaler, seed=args.seed, steps=args.steps, starts=args.starts, upsample=args.upsample)
    G = anon.replacer.G
    made = sample.faces(G, 64, seed=args.seed + 1000)
    big = [cv2.resize(f, (CROP, CROP), interpolation=cv2.INTER_CUBIC) for f in made]
    find = detect.detector(detect.DEFAULT_DETECTOR, args.upsample)
    readable = [f for f in big if any(h.confident for h in find(cv2.copyMakeBorder(f, 32, 32, 32, 32, cv2.BORDER_REPLICATE)))]
    scn = scenes(np.stack(readable[:3]), 3, args.seed + 7)[0][0]
    out, recs = anon.image(scn)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([scn, np.full((H, 8, 3), 255, np.uint8), out], 1), cv2.COLOR_RGB2BGR))
    return f"wrote {path}: {len(readable)} of 64 generated faces readable; {[(r.method, r.reason) for r in recs]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="zip of real face photos")
    ap.add_argument("--model", required=True, help="GAN run (trained on the same kind of faces)")
    ap.add_argument("--upscaler", default=None)
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--faces", type=int, default=2, help="faces per scene")
    ap.add_argument("--detect-scenes", type=int, default=20, help="scenes the detection table uses (the CNN takes ≈12 s each on 2 cores)")
    ap.add_argument("--detectors", default="hog,cnn,haar")
    ap.add_argument("--redetect", default="haar", help="the other detector that must find the anonymized faces")
    ap.add_argument("--upsample", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: template,detection,anonymize")
    ap.add_argument("--picture", type=Path, default=None, help="also write a before|after PNG of generated faces here")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    skip = set(filter(None, args.skip.split(",")))
    print(describe(torch.device("cpu")))
    print(f"# python benchmarks/anonymize_quality.py --data {args.data} --model {args.model} --upscaler {args.upscaler} --scenes {args.scenes} "
          f"--faces {args.faces} --detect-scenes {args.detect_scenes} --upsample {args.upsample} --steps {args.steps} --starts {args.starts} --seed {args.seed}")
    faces = load_faces(args.data, args.scenes * args.faces, args.seed)
    scn = scenes(faces, args.faces, args.seed)
    if "template" not in skip:
        print("\n".join(["\n## template (dataset photos)", *template_table(faces)]), flush=True)
    if "detection" not in skip:
        some = scn[:args.detect_scenes]
        rows, found_by = detection_table(some, args.detectors.split(","), args.upsample)
        print("\n".join(["\n## detection", *rows, "", *box_offsets(some, found_by)]), flush=True)
    if "anonymize" not in skip:
        print("\n".join(["\n## anonymization", *anonymize_table(scn, args)]), flush=True)
    if args.picture:
        print(picture(args, args.picture))


if __name__ == "__main__":
    main()
