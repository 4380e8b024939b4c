"""`facegan presets`, `train` and `train-sr`: their options come from the option table (facegan.config)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Optional

import typer

from facegan import checks
from facegan.cli.app import NPROC_HELP, app, free_run_dir, launch, quiet_rank
from facegan.errors import FaceganError

if typing.TYPE_CHECKING:
    from facegan.train.toolbox import TrainResult


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


def _table_options(*classes: type, defaults: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """Typer options derived from the option table (each field's :class:`facegan.checks.Opt`): one per
    option field of ``classes``, defaulting to None ("not given": the preset, the recipe, the saved
    run or the config's default decides), with its declared flag and help, and the default it stands for."""
    params = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f, o in checks.options(cls):
            decls = [checks.declared(f, hints[f.name])] + ([o.short] if o.short else [])
            said = (defaults or {}).get(f.name, "" if f.default is None else f"{f.default:g}" if isinstance(f.default, float)
                                        else "on" if f.default is True else "off" if f.default is False else str(f.default))
            notes = ([f"default: {said}"] if said not in ("", "''") else []) + (["may change on --resume"] if o.resume else [])
            text = o.help + (f" ({'; '.join(notes)})" if notes else "")
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[checks.base_type(hints[f.name])],
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
    launch(nproc)
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
        out = Path(options.pop("out") or free_run_dir(preset))  # a path as the user typed it, normalised ("runs/x/" → "runs/x")
        cfg = config.resolve(preset, data=src, out=str(out), **options)
    result = run_train(cfg, resume=resume is not None, progress=progress)
    run = result.run
    _trained("train", result, f"  run folder : {run}", f"  checkpoint : {result.checkpoint}", f"  samples    : {run / 'samples'}",
             f"  metrics    : {run / 'metrics.jsonl'}  (curve: {run / 'loss_curve.png'})")


def _trained(command: str, result: TrainResult, *lines: str) -> None:
    """What a finished training invocation prints (rank 0 only): its work, where the whole run stands
    after a resume, then ``lines``; exit 130 when a signal stopped it."""
    if quiet_rank():
        return
    typer.echo(f"trained {result.steps - result.start_step} steps ({result.images - result.start_images:,} images) in "
               f"{result.seconds:.0f} s, stopped by {result.stopped_by}"
               + (f"; the run is at step {result.steps}, {result.images:,} images in total" if result.start_step else ""))
    for line in lines:
        typer.echo(line)
    if result.stopped_by == "signal":
        typer.echo(f"interrupted; continue with: facegan {command} --resume {result.run}", err=True)
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


def train_sr(src: Optional[str] = None, resume: Optional[Path] = None, nproc: Optional[int] = None, progress: bool = True,
             **options: object) -> None:
    """Train a face upscaler (×2/×4 SRResNet): L1 first, optionally a feature + adversarial fine-tune with --init.

    --batch is the global batch: with N ranks (--nproc N, or torchrun) each takes batch/N.
    """
    launch(nproc)
    from facegan.config import SRTrainConfig
    from facegan.train.sr import resolve
    from facegan.train.sr import train_sr as run_train_sr
    from facegan.train.toolbox import resume_config

    if resume is not None:
        cfg = resume_config(resume, **options)
        if not isinstance(cfg, SRTrainConfig):
            raise FaceganError(f"{resume} is a GAN run; continue it with facegan train --resume {resume}")
    else:
        paths = {k: str(Path(options[k])) for k in ("out", "init") if options[k] is not None}  # normalised, as paths
        cfg = resolve(data=src, **{**options, "out": str(free_run_dir("sr")), **paths})
    result = run_train_sr(cfg, resume=resume is not None, progress=progress)
    run = result.run
    _trained("train-sr", result, f"  run folder : {run}   (panels: input / bicubic / ours / truth in {run / 'samples'})",
             f"  checkpoint : {result.checkpoint}",
             f"  use it     : facegan upscale PHOTOS --model {run} --out BIG   |   facegan generate GANRUN --upscale {run}")


def _train_sr_command() -> typing.Callable[..., None]:
    from facegan.config import SRTrainConfig
    from facegan.models.srresnet import SRConfig
    from facegan.train.sr import DEFAULT_EPOCHS

    own = _run_params("High-resolution training photos (any source `prepare` takes, or a prepared .npy). Default: "
                      "built-in procedural faces.",
                      "Continue the upscaler run in this folder from its newest checkpoint (that checkpoint file works too).")
    said = {"out": "runs/sr, numbered if taken", "epochs": f"{DEFAULT_EPOCHS:g} when no budget is given"}
    return _command(train_sr, own, _table_options(SRTrainConfig, SRConfig, defaults=said))


app.command("train-sr")(_train_sr_command())
