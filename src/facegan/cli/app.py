"""The `facegan` command's Typer app, what its commands share, and :func:`main`.

:func:`main` is the one error boundary: every user mistake (a FaceganError) and every OS error
on a user's path (a full disk, a read-only folder) is printed as one ``error:`` line with exit
code 2 (3 for a diverged run, 130 for an interrupted one); anything else is a bug, reported as
one line with exit code 1. ``facegan --debug …`` or ``FACEGAN_DEBUG=1`` shows the traceback.
Options are checked (``facegan.checks``, ``config.validate``) before any work starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

try:  # recent Typer vendors Click; older releases depend on it
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

from facegan import checks
from facegan.errors import DEBUG_ENV, FaceganError, error_line, exit_code

NO_ARGS_HELP = getattr(click_exceptions, "NoArgsIsHelpError", ())  # Click ≥ 8.2; older Click prints the help itself

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train DCGAN-family face generators, then generate faces from them.",
)


NPROC_HELP = "Run as N ranks on this machine (torchrun --standalone; N GPUs, or CPU processes); see README 'Many GPUs and clusters'."


def launch(nproc: Optional[int]) -> None:
    """``--nproc N`` > 1: run this very command as N ranks through torchrun, then exit with its code."""
    if nproc is not None and checks.integer("--nproc", nproc, 1, 1024) > 1:
        from facegan.launch import relaunch

        raise typer.Exit(relaunch(nproc))


def quiet_rank() -> bool:
    """Whether this process is a rank other than 0 of a many-rank run (which prints no summary)."""
    from facegan.dist import env_world

    return env_world()[0] != 0


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help=f"Show the full traceback of any error (same as {DEBUG_ENV}=1).")) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def free_run_dir(name: str) -> Path:
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
