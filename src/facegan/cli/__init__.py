"""The `facegan` command: a thin layer of flags over the library, one module per area.

Each command parses its options, calls one library function and prints what it did, so every
behaviour a command has is reachable from Python too. :func:`main` (cli/app.py) is the one error
boundary: every user mistake (a FaceganError) and every OS error on a user's path (a full disk, a
read-only folder) is printed as one ``error:`` line with exit code 2 (3 for a diverged run, 130
for an interrupted one); anything else is a bug, reported as one line with exit code 1.
``facegan --debug …`` or ``FACEGAN_DEBUG=1`` shows the traceback.

The areas, in the order `facegan --help` lists them: data (prepare), train (presets, train,
train-sr), faces (demo, generate, export, upscale, interpolate, project), serve, anonymize,
measure (evaluate, report).
"""

# isort: off - the order the commands are registered in is the order `facegan --help` lists them
from facegan.cli import anonymize, data, faces, measure, serve, train  # noqa: F401 - each registers its commands

# isort: on
from facegan.cli.app import app, main
from facegan.errors import error_line, exit_code

__all__ = ["app", "main", "error_line", "exit_code"]
