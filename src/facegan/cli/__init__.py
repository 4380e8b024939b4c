"""The `facegan` command: a thin layer of flags over the library, one module per area.

Each command parses its options, calls one library function and prints what it did, so every
behaviour a command has is reachable from Python too. :func:`main` (cli/app.py) is the one error
boundary: every user mistake (a FaceganError) and every OS error on a user's path (a full disk, a
read-only folder) is printed as one ``error:`` line with exit code 2 (3 for a diverged run, 130
for an interrupted one); anything else is a bug, reported as one line with exit code 1.
``facegan --debug …`` or ``FACEGAN_DEBUG=1`` shows the traceback.

The areas, in the order `facegan --help` lists them: data (prepare), train (presets, train,
train-sr), faces (demo, generate, export, upscale, interpolate, project), dataset, serve, anonymize,
measure (evaluate, report).
"""
# isort: skip_file

# The order the areas are imported in is the order `facegan --help` lists their commands.
from facegan.cli import data  # noqa: F401, I001 - each module registers its commands
from facegan.cli import train  # noqa: F401, I001
from facegan.cli import faces  # noqa: F401, I001
from facegan.cli import dataset  # noqa: F401, I001
from facegan.cli import measure  # noqa: F401, I001
from facegan.cli import serve  # noqa: F401, I001
from facegan.cli import anonymize  # noqa: F401, I001
from facegan.cli.app import app, main
from facegan.errors import error_line, exit_code

__all__ = ["app", "main", "error_line", "exit_code"]
