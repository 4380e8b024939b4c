"""`facegan prepare`: a dataset packed once into a memory-mapped uint8 file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facegan.cli.app import app


@app.command()
def prepare(
    src: str = typer.Argument(..., help="Image folder, zip, CelebA/FFHQ/140k-faces folder, Fashion-MNIST idx file/folder, or 'procedural[:N]'."),
    res: int = typer.Option(..., "--res", help="Output resolution (square side in pixels)."),
    out: Path = typer.Option(..., "--out", help="Output .npy file; a manifest FILE.json is written beside it."),
    channels: int = typer.Option(3, "--channels", help="3 = RGB, 1 = grayscale."),
    crop: str = typer.Option("auto", "--crop", help="auto (= center), center, celeba (140×140 face box), none (squash)."),
    include_fake: bool = typer.Option(False, "--include-fake", help="140k-faces layout: also take the fake faces."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Pack at most this many images."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: all cores)."),
) -> None:
    """Decode, crop and resize a dataset once into a memory-mapped uint8 file for training."""
    from facegan.data.prepare import format_summary
    from facegan.data.prepare import prepare as run_prepare

    manifest = run_prepare(src, out, res, channels=channels, crop=crop, include_fake=include_fake,
                           limit=limit, workers=workers, progress=True)
    typer.echo(format_summary(manifest))
