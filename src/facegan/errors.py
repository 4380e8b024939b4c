"""User-facing errors, and the one line each kind of failure becomes.

Anything a user can cause (a missing folder, an empty dataset, a checkpoint from another tool)
raises :class:`FaceganError`. The CLI prints its message as one line and exits with
``exit_code`` instead of showing a traceback; library callers can catch it like any exception.
Operating-system errors on a user's path (a full disk, a read-only folder, a file where a folder
should be) are turned into the same kind of line by :func:`describe_os_error`; :func:`error_line`
and :func:`exit_code` say what any failure prints and returns, for the CLI and for a rank telling
the others why it stopped.
"""

from __future__ import annotations

import errno

DEBUG_ENV = "FACEGAN_DEBUG"  # set (or `facegan --debug`): the CLI shows tracebacks instead of one line

# What to do about an OSError, by errno: the part of the line a user can act on.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free space and run the command again",
    errno.EDQUOT: "the disk quota is used up: free space and run the command again",
    errno.EFBIG: "the file size limit was reached (ulimit -f, or the file system's maximum)",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.EACCES: "choose a location you can write to, or fix its permissions",
    errno.EPERM: "choose a location you can write to",
    errno.ENOENT: "it does not exist",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EISDIR: "that is a folder; give a file name",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "it is a symbolic link loop",
    errno.EMFILE: "too many open files (raise ulimit -n)",
    errno.EIO: "the disk reported an I/O error: check the device",
}


class FaceganError(Exception):
    """An error caused by the user's input, reported as one line and a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_os_error(e: OSError) -> str:
    """One line for an OSError: the path, what the system said, and what to do about it."""
    where = " → ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    advice = _ADVICE.get(e.errno or -1)
    return f"{where + ': ' if where else ''}{what}" + (f" ({advice})" if advice else "")


def error_line(e: Exception) -> str:
    """What the user reads: the message of a user error, the path and advice of an OS error."""
    if isinstance(e, FaceganError):
        return str(e)
    if isinstance(e, OSError):
        return describe_os_error(e)
    if out_of_memory(e):
        return "out of memory: use a smaller --batch, -n or resolution, or a machine with more memory"
    return (f"internal error ({type(e).__name__}: {e}); this is a facegan bug: please report it with the output of "
            f"the same command run with {DEBUG_ENV}=1")


def exit_code(e: Exception) -> int:
    """2 for bad input or a failing machine, a FaceganError's own code (3: diverged), 1 for a bug."""
    if isinstance(e, FaceganError):
        return e.exit_code
    return 2 if isinstance(e, OSError) or out_of_memory(e) else 1


def out_of_memory(e: Exception) -> bool:
    """Python's MemoryError, or torch's (CPU: a RuntimeError from its allocator; CUDA: OutOfMemoryError)."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e).lower()))
