"""What makes and uses faces: `demo`, `generate`, `interpolate`, `project`, `upscale`, `export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facegan import checks
from facegan.cli.app import NPROC_HELP, app, free_run_dir, launch
from facegan.errors import FaceganError


@app.command()
def demo(
    seconds: float = typer.Option(150.0, "--seconds", min=1.0, help="Training time budget."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/demo, numbered if taken)."),
) -> None:
    """Train the `quick` preset on built-in procedural faces for a few minutes, then draw a 6×6 grid."""
    from facegan import config, sample, saved
    from facegan.train.loop import train as run_train

    cfg = config.resolve("quick", out=str(out or free_run_dir("demo")), max_time=seconds)
    typer.echo(f"training `quick` on built-in procedural faces for {seconds:.0f} s → {cfg.out}")
    result = run_train(cfg)
    grid = sample.write_grid(saved.load_generator(result.checkpoint), Path(cfg.out) / "faces.png", rows=6)
    typer.echo(f"done: {result.images:,} images in {result.seconds:.0f} s")
    typer.echo(f"  faces (6×6 grid): {grid}")
    typer.echo(f"  training samples: {Path(cfg.out) / 'samples'}   loss curve: {Path(cfg.out) / 'loss_curve.png'}")
    typer.echo(f"  checkpoint      : {result.checkpoint}")
    typer.echo(f"  more faces      : facegan generate {cfg.out} -n 64")


TRUNCATION_HELP = ("Truncation trick: redraw latent components with |z_i| > ψ (in standard deviations; "
                   "e.g. 0.7). Smaller = more typical, less varied faces. Default: off.")


@app.command()
def generate(
    source: Path = typer.Argument(..., help="Run folder (uses its latest checkpoint), checkpoint file or model folder (facegan export)."),
    n: int = typer.Option(64, "-n", min=1, help="Number of faces."),
    seed: int = typer.Option(0, "--seed", help="Latent stream; face (seed, index) is always the same face."),
    start: int = typer.Option(0, "--start", help="First latent index (regenerate one face with --start I -n 1)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for PNGs + manifest.json (default: RUN/generated/seedS)."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write one grid PNG here instead of separate files."),
    rows: int = typer.Option(6, "--rows", help="Grid is rows×rows faces."),
    batch: int = typer.Option(256, "--batch", min=1, help="Faces per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
    use_ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the run has one."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help=TRUNCATION_HELP),
    upscale: Optional[Path] = typer.Option(None, "--upscale", help="Upscaler run (facegan train-sr) that enlarges every face, e.g. 64² → 256² with a ×4 model."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (default: every face regenerates bit-exactly) or bf16 "
                                  "(faster on GPUs and AVX512-BF16/AMX CPUs; close to, not equal to, the fp32 faces, and differs between machines)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Threads encoding PNG files (default: one per CPU core)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help=NPROC_HELP + " The files are the ones one process writes."),
) -> None:
    """Generate faces from a trained generator: PNG files with a manifest, or a grid."""
    from facegan import sample

    sample.check_options(seed, start, rows, truncation, grid, out)  # before any slow work or rank
    launch(nproc)
    done = sample.generate_from(source, n, seed=seed, start=start, out=out, grid=grid, rows=rows, batch=batch, device=device,
                                ema=use_ema, truncation=truncation, upscale=upscale, precision=precision, workers=workers)
    if done is None:  # a rank other than 0
        return
    if grid is not None:
        typer.echo(f"wrote a {rows}×{rows} grid of faces: {done.path}")
    else:
        typer.echo(f"wrote {n} faces ({done.size}×{done.size}) to {done.path} (manifest: {done.manifest})")


@app.command()
def export(
    source: Path = typer.Argument(..., help="GAN run folder (uses its latest checkpoint) or checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (config.json, model.safetensors, README.md, samples.png)."),
    upscaler: Optional[Path] = typer.Option(None, "--upscaler", help="Also pack this upscaler run (facegan train-sr) as upscaler.safetensors."),
    onnx: bool = typer.Option(False, "--onnx", help="Also write model.onnx (dynamic batch; needs facegan[onnx])."),
    use_ema: bool = typer.Option(True, "--ema/--no-ema", help="Pack the EMA generator when the run has one."),
) -> None:
    """Pack a trained generator as a model folder to hand on: weights (fp32, no optimizer state), config, model card."""
    from facegan.export import export as run_export

    checks.output_dir("--out", out)
    folder = run_export(source, out, upscaler=upscaler, onnx=onnx, ema=use_ema)
    typer.echo(f"wrote model folder {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir() if p.is_file())))
    typer.echo(f"  use it: facegan generate {folder} -n 64   |   facegan.load_generator({str(folder)!r})")


@app.command()
def upscale(
    src: Path = typer.Argument(..., help="An image file, or a folder of images (searched recursively)."),
    model: Path = typer.Option(..., "--model", "-m", help="Upscaler run folder (facegan train-sr) or checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the upscaled PNGs (the input's folder structure is kept)."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Expected factor; an error if the model was trained for another (default: the model's)."),
    batch: int = typer.Option(64, "--batch", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
) -> None:
    """Enlarge face images ×2/×4 with a trained upscaler; unreadable files are skipped and named."""
    from facegan import saved
    from facegan.device import pick_device
    from facegan.upscale import check_scale, upscale_files

    checks.output_dir("--out", out)
    G = saved.load_upscaler(model, device=pick_device(device))
    check_scale(G, scale)
    written, skipped = upscale_files(G, src, out, batch=batch)
    for f, why in skipped:
        typer.echo(f"skipped {f}: {why}", err=True)
    typer.echo(f"upscaled {len(written)} image(s) ×{G.cfg.scale} into {out}" + (f"; skipped {len(skipped)}" if skipped else ""))
    if not written:
        raise FaceganError(f"nothing upscaled: all {len(skipped)} input file(s) were unreadable")


@app.command()
def interpolate(
    source: Path = typer.Argument(..., help="Run folder (uses its latest checkpoint), checkpoint file or model folder (facegan export)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds; the walk visits face (seed, 0) of each in order."),
    frames: int = typer.Option(60, "--frames", help="Frames of the animation (a .png strip shows up to 10 per segment)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="walk.gif, walk.mp4 (needs imageio-ffmpeg) or strip.png (default: RUN/walk.gif)."),
    linear: bool = typer.Option(False, "--linear", help="Straight lines between latents instead of spherical (slerp) arcs."),
    loop: bool = typer.Option(True, "--loop/--no-loop", help="Walk back to the first face, for a seamless looping video."),
    fps: float = typer.Option(20.0, "--fps", help="Frames per second of the animation."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help=TRUNCATION_HELP),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
    use_ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the run has one."),
) -> None:
    """Morph between faces: a latent walk through several seeds as a GIF, MP4 or PNG strip."""
    from facegan import sample, saved
    from facegan.device import pick_device

    try:
        seed_list = [checks.seed("--seeds", int(s)) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise FaceganError(f"--seeds takes comma-separated integers such as 3,17,42, not {seeds!r}") from None
    checks.integer("--frames", frames, 2, 10_000)
    checks.number("--fps", fps, 1, 240)
    checks.truncation("--truncation", truncation)
    path = checks.output_file("--out", out or saved.open(source).home / "walk.gif")
    G = saved.load_generator(source, device=pick_device(device), ema=use_ema)
    sample.write_walk(G, path, seed_list, frames=frames, linear=linear, loop=loop, fps=fps, truncation=truncation)
    typer.echo(f"wrote a walk through seeds {', '.join(map(str, seed_list))}: {path}")


@app.command()
def project(
    photo: Path = typer.Argument(..., help="A photo of a face (framed as the training data, or found and aligned: --crop)."),
    model: Path = typer.Option(..., "--model", "-m", help="Run folder, checkpoint file or model folder whose latent space to search."),
    steps: int = typer.Option(300, "--steps", help="Optimisation steps."),
    starts: int = typer.Option(8, "--starts", help="Random starting latents, optimised together; the best one wins."),
    seed: int = typer.Option(0, "--seed", help="Seed of the starting latents and the search noise."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: MODEL/projections/PHOTO_NAME)."),
    crop: str = typer.Option("center", "--crop", help="How the photo is framed before resizing to the model's size: center, celeba, "
                             "none, or align (find the face and align it by its landmarks to the model's own framing; needs facegan[anonymize])."),
    features: bool = typer.Option(True, "--features/--no-features", help="Use the Inception feature term (needs the FID weights of facegan[metrics])."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
    use_ema: bool = typer.Option(True, "--ema/--no-ema", help="Search the EMA generator when the run has one."),
) -> None:
    """Find the latent whose face best matches a photo's face (GAN inversion), and say how close it got."""
    from facegan import project as proj

    fit = proj.fit_photo(photo, model, steps=steps, starts=starts, seed=seed, out=out, crop=crop, features=features,
                         device=device, ema=use_ema)
    if fit.found:
        typer.echo(f"target: {fit.found}")
    result, folder, d, scale, about = fit.result, fit.folder, fit.distance, fit.scale, fit.about
    typer.echo(f"wrote {folder}: fitted.png, target.png, latent.safetensors, loss.png, progress.gif (start {result.start} of {starts} won)")
    if scale is None:
        typer.echo(f"distance to the photo {d:.0f} (32² pixel space); no scale to compare: {about}")
    else:
        typer.echo(f"distance to the photo {d:.0f} (32² pixel space) — {d / scale:.2f}× the median distance between a training "
                   f"face and its nearest other training face ({scale:.0f}, {about})")
