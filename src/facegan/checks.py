"""The rules every option is checked against before any work starts: one place for each.

Typer parses types, but lets through what a long run then trips over hours later or never:
``nan`` passes every ``min=`` bound, a seed of 2⁷⁰ overflows the RNG, and an ``--out`` under a
file fails only when the first checkpoint is written. Commands call these checks first, so a bad
value costs one ``error:`` line and nothing on disk; config validation (``config.validate``)
uses the same rules for values read back from a run's saved config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facegan.errors import FaceganError, describe_os_error

SEED_MAX = 2**32 - 1
"""Seeds are 0 … 2³² − 1 everywhere (CLI, API, service): what every RNG accepts without overflow."""


def number(flag: str, value: float, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` if it is a finite number within [lo, hi] (open ends where asked), else a one-line error."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        lo_s = "" if lo is None else f"{'>' if lo_open else '≥'} {lo:g}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '≤'} {hi:g}"
        bounds = " and ".join(s for s in (lo_s, hi_s) if s)
        raise FaceganError(f"{flag} must be a finite number{' ' + bounds if bounds else ''}, not {value!r}")
    return value


def integer(flag: str, value: int, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` if it is an int within [lo, hi], else a one-line error."""
    if not isinstance(value, int) or isinstance(value, bool) or (lo is not None and value < lo) or \
            (hi is not None and value > hi):
        span = f" in {lo} … {hi}" if lo is not None and hi is not None else (f" ≥ {lo}" if lo is not None else "")
        raise FaceganError(f"{flag} must be an integer{span}, not {value!r}")
    return value


def seed(flag: str, value: int) -> int:
    return integer(flag, value, 0, SEED_MAX)


def truncation(flag: str, value: float | None) -> float | None:
    """The truncation ψ: None (off) or a threshold in standard deviations > 0 (inf is the same as off)."""
    if value is not None and not (isinstance(value, (int, float)) and value > 0):  # also refuses NaN
        raise FaceganError(f"{flag} ψ is a threshold in standard deviations > 0 (e.g. 0.7), not {value}")
    return value


def output_dir(flag: str, path: str | Path) -> Path:
    """A folder that is (or can be created) and written to; checked before any work is done."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise FaceganError(f"{flag} {p} is a file, not a folder; give a folder")
    _check_writable(flag, p)
    return p


def output_file(flag: str, path: str | Path, example: str = "out") -> Path:
    """A file path whose folder exists (or can be created) and can be written to; not a folder itself."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise FaceganError(f"{flag} {p} is a folder; give a file name inside it, such as {p / example}")
    _check_writable(flag, p.parent)
    return p


def _check_writable(flag: str, folder: Path) -> None:
    """``folder`` must be creatable and writable; a file standing where a folder of the path should
    be is named (mkdir's ENOTDIR does not say which).

    A missing folder is really made and removed again (with any parents made for it): the only
    test that holds for root, for whom permission bits — and ``os.access`` — always say yes, while
    a read-only mount still says no.
    """
    folder = Path(os.path.abspath(folder))
    missing = [q for q in (folder, *folder.parents) if not q.exists()]
    existing = folder.parents[len(missing) - 1] if missing else folder
    if not existing.is_dir():
        raise FaceganError(f"{flag}: {existing} is a file, so nothing can be written under it; choose another location")
    if not missing:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise FaceganError(f"{flag}: cannot write in {existing} (read-only or no permission); choose another location")
        return
    try:
        folder.mkdir(parents=True)
    except FileExistsError:  # another process (a rank of the same run) made it meanwhile: not ours to remove
        missing = []
    except OSError as e:
        raise FaceganError(f"{flag}: cannot create {folder}: {describe_os_error(e)}") from None
    finally:
        for q in missing:  # deepest first: leave the tree as it was
            try:
                q.rmdir()
            except OSError:
                pass


def from_dict(cls: type, d: object, what: str) -> object:
    """Build the dataclass ``cls`` from JSON ``d``, checking every known field's type first.

    A saved config is data from a file, not code: a string where a number belongs, or a list
    where a width belongs, must be one line naming the field, not a TypeError deep in torch.
    Unknown keys are ignored (a newer facegan's extra options), missing ones take the defaults;
    nested dataclass fields are the caller's to build.
    """
    if not isinstance(d, dict):
        raise FaceganError(f"{what} is not a JSON object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in d and f.init and not dataclasses.is_dataclass(hints[f.name]):
            if not _is_a(d[f.name], hints[f.name]):
                raise FaceganError(f"{what}: {f.name} = {d[f.name]!r:.60} has the wrong type")
            kwargs[f.name] = d[f.name]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise FaceganError(f"{what}: {e}") from None


def _is_a(value: object, hint: object) -> bool:
    """isinstance for the annotations configs use: int, float (an int is fine), bool, str, Literal, X | None."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:  # its type here; the allowed values are the dataclass's own rule
        return isinstance(value, type(typing.get_args(hint)[0]))
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else False


# ---- the option table: each config field's command-line option, declared once beside the field ----

@dataclass(frozen=True)
class Opt:
    """What a config field is as an option: its flag and help, the bounds and choices every value
    (typed, or read back from a saved run) is checked against, and whether ``--resume`` may change
    it. The CLI's options, the validator, the resume allow-list and docs/options.md are derived
    from these (facegan.config, facegan.cli.train)."""

    help: str
    flag: str = ""  # default: --the-field-name
    short: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    resume: bool = False  # may change when a run is continued (budgets, device, speed, cadence)


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its option (see :class:`Opt`)."""
    return dataclasses.field(default=default, metadata={"option": Opt(help, **kw)})


def options(cls: type) -> list[tuple[dataclasses.Field, Opt]]:
    """The fields of dataclass ``cls`` that are options, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def flag(f: dataclasses.Field) -> str:
    o = f.metadata["option"]
    return o.flag or "--" + f.name.replace("_", "-")


def declared(f: dataclasses.Field, hint: object) -> str:
    """The flag as the CLI declares it (and docs/options.md shows it): --x, or --x/--no-x for a switch."""
    return f"{flag(f)}/--no-{flag(f)[2:]}" if base_type(hint) is bool else flag(f)


def check_options(cfg: object) -> None:
    """Every option field of ``cfg`` against its declared bounds and choices (None: not given)."""
    hints = typing.get_type_hints(type(cfg))
    for f, o in options(type(cfg)):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        base = base_type(hints[f.name])
        if o.choices and value not in o.choices:
            raise FaceganError(f"{flag(f)} must be one of {', '.join(o.choices)}, not {value!r}")
        if base is int:
            integer(flag(f), value, _int(o.lo), _int(o.hi))
        elif base is float:
            number(flag(f), value, o.lo, o.hi, o.lo_open, o.hi_open)


def base_type(hint: object) -> object:
    """The type a value of an option has: int for ``int | None``, str for ``Literal["a", "b"]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return type(args[0])
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)
