"""Face-recognition test packs of people who do not exist: `facegan dataset MODEL --pairs K --out DIR`.

Testing a face-recognition system needs pairs of photos of one person and pairs of two people;
real ones bring real people's faces with them. A pack holds K *persons*, each a face that passes
the data set's filters (facegan.faceset: one face, nobody from the training photos, no face twice),
with a second photo of the same person made by a small move of its latent: z' = (z + σε)/√(1+σ²),
ε standard normal — itself a standard normal latent, so G sees an ordinary input — kept only when
it is one face, nobody from the training photos, and dlib's embedding confirms it as the same
person (distance below the same-person distance ``privacy``, dlib's 0.6 by default: one notion of
"the same person" for the privacy check and the pairs). A person whose moves lose identity :data:`ATTEMPTS` times is dropped
for the next candidate. Then K "different people" pairs join each person's first photo to another
person's second one, kept only when the embedding confirms them as different (distance ≥ ``privacy``).

The pack is laid out as LFW is, so a verification protocol written for LFW runs on it unchanged:
``NAME/NAME_0001.png``, ``NAME/NAME_0002.png`` and ``pairs.txt`` (one fold: ``1\\tK``, then K lines
``name\\t1\\t2`` and K lines ``name1\\t1\\tname2\\t2``); ``pairs.jsonl`` gives each pair's distance
and ``metadata.jsonl`` each photo's latent, for Hugging Face's imagefolder too. The pack is built
in a hidden folder beside ``out`` and renamed into place when whole: minutes of work, so a killed
build starts again rather than leaving half a pack to be mistaken for one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facegan import checks, viz
from facegan.errors import FaceganError
from facegan.faceset import GIVE_UP_TRIES, REASONS, Sieve, open_generator, reasons, training_data
from facegan.faceset import check_options as check_filters
from facegan.fileio import sweep_stale, temp_name, write_text_atomic
from facegan.identity import DUPLICATE, MIN_SCORE, SAME_PERSON, Inspector, training_bank
from facegan.models.dcgan import Generator
from facegan.models.srresnet import SRGenerator
from facegan.sample import face_file, faces, render, truncated_latents

# σ of the latent move for the second photo. On faces64 (AAF, same-person distance 0.45), one move
# kept the person for 98 % of faces at σ 0.1, 92 % at 0.2, 79 % at 0.3, 52 % at 0.5 and 15 % at 1.0
# (benchmarks/faceset_quality.py): 0.3 makes pairs 0.34 apart on average, harder than smaller moves,
# and with ATTEMPTS moves a person is kept 99.8 % of the time.
SIGMA = 0.3
ATTEMPTS = 4  # moves tried per person before it is dropped


def check_options(k: int, seed: int = 0, sigma: float = SIGMA, truncation: float | None = None) -> None:
    checks.integer("--pairs", k, 2, 100_000)  # a different-people pair needs two people
    checks.seed("--seed", seed)
    checks.number("--sigma", sigma, 0.0, 5.0, lo_open=True)
    checks.truncation("--truncation", truncation)


def moved(z: torch.Tensor, sigma: float, seed: int, index: int, attempt: int, truncation: float | None) -> torch.Tensor:
    """The latent of a second photo of person (seed, index): z moved by σ along a direction that
    depends only on (seed, index, attempt), rescaled to stay standard normal (clamped to ±ψ when truncated)."""
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(
        f"facegan-pair:{seed}:{index}:{attempt}".encode(), digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF)
    out = (z + sigma * torch.randn(z.shape, generator=g)) / math.sqrt(1 + sigma * sigma)
    return out.clamp(-truncation, truncation) if truncation is not None else out


@dataclass
class Person:
    name: str
    index: int
    attempt: int  # which move made the second photo
    images: tuple[np.ndarray, np.ndarray]
    embeddings: tuple[np.ndarray, np.ndarray]
    scores: tuple[float, float]
    train_distances: tuple[float, float]

    @property
    def distance(self) -> float:
        return float(np.linalg.norm(self.embeddings[0].astype(np.float64) - self.embeddings[1]))


@dataclass
class Pack:
    """What :func:`build_pack` wrote: ``k`` same and ``k`` different pairs, their distances, the
    candidates tried and why the rejected ones were."""

    out: Path
    k: int
    same: np.ndarray
    different: np.ndarray
    tried: int
    rejected: dict[str, int]
    seconds: float


def build_pack(source: str | Path, k: int, out: str | Path, seed: int = 0, sigma: float = SIGMA,
               truncation: float | None = None, upscale: str | Path | None = None, min_score: float = MIN_SCORE,
               duplicate: float = DUPLICATE, privacy: float = SAME_PERSON, privacy_check: bool = True,
               train_data: str | Path | None = None, batch: int = 64, workers: int | None = None,
               progress: bool = True) -> Pack:
    """Write a test pack of ``k`` same-person and ``k`` different-people pairs into ``out`` (new or empty)."""
    check_options(k, seed, sigma, truncation)
    check_filters(1, seed, truncation, min_score, duplicate, privacy, batch, workers)
    truncation = None if truncation is not None and math.isinf(truncation) else truncation  # ψ = inf is off
    out = checks.output_dir("--out", out).absolute()
    if out == Path.cwd() or out in Path.cwd().parents:
        raise FaceganError(f"--out {out} is the current folder or above it: give the pack a folder of its own")
    if out.exists() and any(os.scandir(out)):
        raise FaceganError(f"--out {out} is not empty: a test pack is written into a new or empty folder")
    if out.parent.is_dir():
        sweep_stale(out.parent)  # a killed build's hidden folder
    model, G, sr = open_generator(source, upscale)
    started = time.perf_counter()
    with Inspector(workers, "the test pack's checks") as inspector:
        prepared = training_data(model, train_data, G) if privacy_check else None
        bank = training_bank(prepared, inspector, progress=progress) if prepared else None
        sieve = Sieve(inspector, bank, min_score, duplicate, privacy)
        persons, tried, rejected = _persons(G, sr, sieve, k, seed, sigma, truncation, batch, progress)
    different = _different(persons, privacy)
    tmp = temp_name(out)
    try:
        _write(tmp, persons, different, seed, sigma, truncation, privacy, privacy_check, tried, rejected)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = np.array([p.distance for p in persons])
    diff = np.array([d for _, _, d in different])
    return Pack(out, k, same, diff, tried, rejected, time.perf_counter() - started)


def _persons(G: Generator, sr: SRGenerator | None, sieve: Sieve, k: int, seed: int, sigma: float,
             truncation: float | None, batch: int, progress: bool) -> tuple[list[Person], int, dict[str, int]]:
    """Candidates (seed, 0), (seed, 1), … through the filters, each kept one given a confirmed second photo."""
    persons: list[Person] = []
    rejected = dict.fromkeys(REASONS, 0) | {"identity_lost": 0}
    tried = 0
    with tqdm(total=k, unit="person", desc="persons", disable=not progress, dynamic_ncols=True) as bar:
        while len(persons) < k:
            if not persons and tried >= GIVE_UP_TRIES:
                raise FaceganError(f"none of the first {tried} faces made a person ({reasons(rejected)}): is this a face model, "
                                   "and does --privacy fit the training photos (README 'Synthetic face sets')?")
            imgs = faces(G, batch, seed=seed, start=tried, batch_size=batch, truncation=truncation, upscaler=sr)
            verdicts = sieve.sift(imgs)
            anchors = []
            for j, v in enumerate(verdicts):
                if v.reason is None:
                    anchors.append((tried + j, imgs[j], v))
                else:
                    rejected[v.reason] += 1
            tried += len(verdicts)
            for index, img, v, second in _second_photos(G, sr, sieve, anchors, seed, sigma, truncation):
                if second is None:
                    rejected["identity_lost"] += 1
                    continue
                attempt, img2, v2 = second
                name = Path(face_file(seed, index)).stem
                persons.append(Person(name, index, attempt, (img, img2), (v.embedding, v2.embedding),
                                      (v.score, v2.score), (v.train_distance, v2.train_distance)))
                bar.update(1)
                if len(persons) == k:
                    break
    return persons, tried, rejected


def _second_photos(G: Generator, sr: SRGenerator | None, sieve: Sieve, anchors: list, seed: int, sigma: float,
                   truncation: float | None) -> list:
    """For each anchor (index, image, verdict): (…, (attempt, image, verdict)) for the first move
    that passes the filters but the duplicate one (the second photo is meant to be close) and keeps
    the identity; (…, None) when none of :data:`ATTEMPTS` does. Each attempt renders all the
    anchors still waiting in one batch."""
    found: dict[int, tuple] = {}
    waiting = [a[0] for a in anchors]
    by_index = {a[0]: a for a in anchors}
    for attempt in range(ATTEMPTS):
        if not waiting:
            break
        z = torch.stack([moved(truncated_latents(1, G.cfg.z_dim, seed, i, truncation)[0], sigma, seed, i, attempt,
                               truncation) for i in waiting])
        imgs = render(G, z)
        if sr is not None:
            imgs = sr.upscale(imgs, 64)
        verdicts = Sieve(sieve.inspector, sieve.bank, sieve.min_score, 0.0, sieve.privacy).sift(imgs)
        still = []
        for j, (i, v) in enumerate(zip(waiting, verdicts)):
            same = float(np.linalg.norm(by_index[i][2].embedding.astype(np.float64) - v.embedding))
            if v.reason is None and same < sieve.privacy:
                found[i] = (attempt, imgs[j], v)
            else:
                still.append(i)
        waiting = still
    return [(i, img, v, found.get(i)) for i, img, v in anchors]


def _different(persons: list[Person], threshold: float) -> list[tuple[int, int, float]]:
    """K pairs (i, j, distance) of person i's first photo and person j's second, j the first person
    after i (cyclically) whom the embedding calls someone else (distance ≥ ``threshold``). Pairs are
    of photos, so (i, j) and (j, i) are two different pairs of images."""
    k = len(persons)
    first = np.stack([p.embeddings[0] for p in persons]).astype(np.float64)
    second = np.stack([p.embeddings[1] for p in persons]).astype(np.float64)
    out = []
    for i in range(k):
        for step in range(1, k):
            j = (i + step) % k
            d = float(np.linalg.norm(first[i] - second[j]))
            if d >= threshold:
                out.append((i, j, d))
                break
        else:
            raise FaceganError(f"{persons[i].name} is within {threshold} of every other person of the {k}: too few distinct "
                               "people for different-people pairs; ask for more --pairs")
    return out


def _write(folder: Path, persons: list[Person], different: list[tuple[int, int, float]], seed: int, sigma: float,
           truncation: float | None, threshold: float, privacy_check: bool, tried: int, rejected: dict[str, int]) -> None:
    folder.mkdir(parents=True)
    meta, pairs = [], []
    for p in persons:
        (folder / p.name).mkdir()
        for photo in (0, 1):
            file = f"{p.name}/{p.name}_{photo + 1:04d}.png"
            (folder / file).write_bytes(viz.encode_png(p.images[photo]))
            meta.append({"file_name": file, "person": p.name, "seed": seed, "index": p.index, "truncation": truncation,
                         "move": None if photo == 0 else {"sigma": sigma, "attempt": p.attempt},
                         "detector_score": round(p.scores[photo], 4),
                         "nearest_training_distance": round(p.train_distances[photo], 4)
                         if math.isfinite(p.train_distances[photo]) else None})
        pairs.append({"same": True, "a": f"{p.name}/{p.name}_0001.png", "b": f"{p.name}/{p.name}_0002.png",
                      "distance": round(p.distance, 4)})
    for i, j, d in different:
        a, b = persons[i].name, persons[j].name
        pairs.append({"same": False, "a": f"{a}/{a}_0001.png", "b": f"{b}/{b}_0002.png", "distance": round(d, 4)})
    k = len(persons)
    lfw = [f"1\t{k}"] + [f"{p.name}\t1\t2" for p in persons] + \
        [f"{persons[i].name}\t1\t{persons[j].name}\t2" for i, j, _ in different]
    (folder / "pairs.txt").write_text("\n".join(lfw) + "\n")
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in meta))
    same = np.array([p.distance for p in persons])
    diff = np.array([d for _, _, d in different])
    lines = ["---", "license: other", "tags: [synthetic, faces, face-verification, facegan]", "---", "",
             f"# A face-verification test pack of {k} people who do not exist", "",
             f"{k} same-person pairs and {k} different-people pairs, laid out as LFW (`pairs.txt`: one fold), "
             "made by `facegan dataset --pairs`. Every photo passed the data set's filters: exactly one face, "
             + (f"nobody from the model's training photos (identity distance ≥ {threshold} to every one)" if privacy_check
                else "**NOT checked against the training photos (`--no-privacy-check`)**") + ".", "",
             f"- Same person: the second photo moves the first's latent by σ = {sigma} "
             f"(z' = (z + σε)/√(1+σ²)); dlib's embedding confirmed every pair: distance {same.mean():.3f} on average, "
             f"{same.max():.3f} at most (< {threshold}, the same-person distance).",
             f"- Different people: confirmed by the same embedding: distance {diff.mean():.3f} on average, "
             f"{diff.min():.3f} at least (≥ {threshold}).",
             "- So dlib's embedding scores 100 % on this pack by construction; another system's errors on it are "
             "its own. The pairs closest to the threshold are the hard ones (`pairs.jsonl` has each distance).",
             f"- {tried} candidate faces tried, seed {seed}; rejected: {reasons(rejected)}.", "",
             "**Licence**: these are faces made by a model trained on real photos; the licence and consent terms "
             "of those photos may bind the model's outputs. Check them before use.", ""]
    write_text_atomic(folder / "README.md", "\n".join(lines))
