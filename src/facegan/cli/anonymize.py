"""`facegan anonymize`: faces in photos and videos replaced (facegan.anonymize)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facegan.anonymize.detect import DEFAULT_DETECTOR
from facegan.anonymize.pipeline import MODES
from facegan.anonymize.replace import BLENDS, STARTS, STEPS
from facegan.cli.app import app
from facegan.errors import FaceganError

ANONYMIZE_HELP = """Replace the faces in a photo, a folder of photos or a video with generated ones.

\b
Per face: detect (--detector); align to the model's framing; fit the blurred
face into the model's latent space (pose, light, skin tone) and move half-way
to a random latent of the face's seed (another person); enlarge (--upscaler
when the face is larger than the model's); colour-match; blend back.
Fail closed: a face too small, cut by the frame, with a low detector score,
or whose replacement still matches the person (dlib's embedding) is
pixelated; --mode blur|pixelate|replace forces one method. Video: audio kept,
one synthetic identity per tracked person. OUT/audit.json lists every face,
its method, the reason and its seed.
Needs the anonymize extra: pip install 'facegan\\[anonymize]'

\b
Examples:
  facegan anonymize street.jpg --model runs/faces64 --out anon/
  facegan anonymize clip.mp4 --model runs/faces64 --upscaler runs/sr -o anon/
  facegan anonymize photos/ --mode pixelate --out anon/
"""


@app.command(help=ANONYMIZE_HELP)
def anonymize(
    src: Path = typer.Argument(..., help="A photo, a video (.mp4 .mov .mkv .avi .webm .m4v) or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the anonymized files (same names) and audit.json."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Run folder, checkpoint or model folder whose faces replace the real ones (not needed for --mode blur|pixelate)."),
    upscaler: Optional[Path] = typer.Option(None, "--upscaler", help="Upscaler run or model folder, for faces larger than the model's."),
    detector: str = typer.Option(DEFAULT_DETECTOR, "--detector", help="hog (dlib HOG), cnn (dlib MMOD CNN: slower, finds more turned faces), haar (OpenCV cascade)."),
    mode: str = typer.Option(MODES[0], "--mode", help="auto (replace where it works, else pixelate), replace, blur, pixelate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the replacements: the same input and seed give the same output."),
    steps: int = typer.Option(STEPS, "--steps", help="Optimisation steps of each face's fit (a tracked face in a video: a quarter)."),
    starts: int = typer.Option(STARTS, "--starts", help="Random starting latents per face; the best one wins."),
    blend: str = typer.Option(BLENDS[0], "--blend", help="feather (landmark-hull mask with a soft edge) or poisson (seamless cloning)."),
    upsample: int = typer.Option(1, "--upsample", help="Image doublings before dlib detection (0: faces from ≈80 px, 1: from ≈40 px, slower)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
) -> None:
    from facegan.anonymize import batch

    audit, folder = batch.run(src, out, model, upscaler, detector=detector, mode=mode, seed=seed, steps=steps, starts=starts,
                              blend=blend, device=device, upsample=upsample)
    for s in audit["skipped"]:
        typer.echo(f"skipped {s['file']}: {s['why']}", err=True)
    faces = [f for entry in audit["files"] for f in entry["faces"]]
    methods = {m: sum(f["method"] == m for f in faces) for m in ("replace", "pixelate", "blur")}
    if not audit["files"]:
        raise FaceganError(f"nothing anonymized: all {len(audit['skipped'])} input file(s) were unreadable")
    if not faces:
        typer.echo(f"no faces found in {src}; copied {len(audit['files'])} file(s) unchanged into {folder} (audit.json)")
        return
    done = {"replace": "replaced", "pixelate": "pixelated", "blur": "blurred"}
    summary = ", ".join(f"{n} {done[m]}" for m, n in methods.items() if n)
    typer.echo(f"anonymized {len(faces)} face(s) in {len(audit['files'])} file(s): {summary} → {folder} (audit.json)")
