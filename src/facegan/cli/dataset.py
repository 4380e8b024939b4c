"""`facegan dataset`: synthetic face sets (facegan.faceset) and face-recognition test packs (facegan.testpack)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facegan.cli.app import app
from facegan.cli.faces import TRUNCATION_HELP
from facegan.errors import FaceganError
from facegan.identity import DUPLICATE, MIN_SCORE, SAME_PERSON
from facegan.testpack import SIGMA

DATASET_HELP = f"""Build a synthetic face set (--n N) or a face-recognition test pack (--pairs K).

\b
--n N: faces (seed, 0), (seed, 1), … are generated until N are kept.
A face is kept only if dlib's detector finds exactly one face in it
(--min-score), its identity distance (dlib's face embedding) to every
training face is at least --privacy (dlib's same-person {SAME_PERSON}), and to
every face kept before it at least --duplicate. OUT gets the PNGs,
metadata.jsonl (Hugging Face imagefolder) and a datasheet README.md.
The same command again resumes a killed run; a larger --n extends a set.
--pairs K: K same-person pairs (a small latent move, --sigma, confirmed
by the embedding) and K different-people pairs, laid out as LFW with
pairs.txt. Needs the anonymize extra: pip install 'facegan\\[anonymize]'

\b
Examples:
  facegan dataset runs/faces64 --n 10000 --out synthetic/
  facegan dataset runs/faces64 --pairs 1000 --out fr-pack/
  facegan dataset runs/faces64 --n 1000 --privacy 0.45 --out synthetic/
"""


@app.command(help=DATASET_HELP)
def dataset(
    source: Path = typer.Argument(..., help="Run folder (its latest checkpoint), checkpoint file or model folder (facegan export)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the set (new, empty, or this same set to resume or extend)."),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Faces to keep."),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="Build a test pack of this many same and different pairs instead."),
    seed: int = typer.Option(0, "--seed", help="Latent stream: the same model, seed and filters give the same set."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help=TRUNCATION_HELP),
    upscale: Optional[Path] = typer.Option(None, "--upscale", help="Upscaler run or model folder: the upscaled face is what is checked and kept."),
    min_score: float = typer.Option(MIN_SCORE, "--min-score", help="Detector score (SVM margin) a face needs; dlib's default 0."),
    duplicate: float = typer.Option(DUPLICATE, "--duplicate", help="Identity distance below which a face is the same face as one kept already."),
    privacy: float = typer.Option(SAME_PERSON, "--privacy", help="Identity distance to every training face a face needs (dlib's same-person threshold)."),
    no_privacy_check: bool = typer.Option(False, "--no-privacy-check", help="Build without comparing faces with the training photos (the datasheet says so)."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="The training photos (folder, zip or prepared .npy), where the model's own record of them is not on this machine."),
    sigma: float = typer.Option(SIGMA, "--sigma", help="--pairs: the latent move that makes a person's second photo."),
    batch: int = typer.Option(64, "--batch", help="Faces generated and checked per batch."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Threads for the detector (default: one per CPU core; the embedding uses torch's threads)."),
) -> None:
    if (n is None) == (pairs is None):
        raise FaceganError("give either --n N (a face set) or --pairs K (a face-recognition test pack)")
    filters = dict(seed=seed, truncation=truncation, upscale=upscale, min_score=min_score, duplicate=duplicate,
                   privacy=privacy, privacy_check=not no_privacy_check, train_data=train_data, batch=batch,
                   workers=workers)
    if pairs is not None:
        from facegan.testpack import build_pack

        pack = build_pack(source, pairs, out, sigma=sigma, **filters)
        typer.echo(f"test pack: {pack.k} same-person pairs (distance ≤ {pack.same.max():.3f}) and {pack.k} different-people "
                   f"pairs (≥ {pack.different.min():.3f}) from {pack.tried} faces in {pack.seconds:.0f} s → {pack.out} (pairs.txt)")
        return
    from facegan.faceset import build, reasons

    built = build(source, n, out, **filters)
    typer.echo(f"kept {built.kept} of {built.tried} faces ({built.kept / max(built.tried, 1):.1%}; rejected: {reasons(built.rejected)}) "
               f"→ {built.out} (metadata.jsonl, README.md)")
