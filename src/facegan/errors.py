"""User-facing errors.

Anything a user can cause (a missing folder, an empty dataset, a checkpoint from another tool)
raises :class:`FaceganError`. The CLI prints its message as one line and exits with
``exit_code`` instead of showing a traceback; library callers can catch it like any exception.
"""

from __future__ import annotations


class FaceganError(Exception):
    """An error caused by the user's input, reported as one line and a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
