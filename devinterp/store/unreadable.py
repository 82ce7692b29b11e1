"""Files of a run that cannot be read: how readers name them and go on.

A run directory is read by many tools (analysis, report, dashboard, resume). A truncated or
corrupted file must stop none of them: the reader skips that file, names it (a warning, a note,
a failure record) and carries on with the rest. Readers never delete, move or rewrite the file:
it stays as it was, for the user to inspect.
"""
from __future__ import annotations

import warnings
from pathlib import Path


class UnreadableFileWarning(UserWarning):
    """A file of a run could not be read and was skipped; the message names it."""


class UnreadableFileError(Exception):
    """A file of a run exists but cannot be read (truncated, corrupted, foreign format).

    `path` is the file, `reason` a one-line description of what went wrong."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: unreadable ({reason})")
        self.path = Path(path)
        self.reason = reason


def error_line(error: BaseException) -> str:
    """`ErrorType: first line of the message`, short enough for a log line or a note."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = message if len(message) <= 160 else message[:157] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def warn_unreadable(error: UnreadableFileError, what: str = "skipped") -> None:
    warnings.warn(f"{error}; {what}", UnreadableFileWarning, stacklevel=3)


def has_parquet_magic(path: Path) -> bool:
    """Cheap completeness check of a Parquet file: it starts and ends with the magic `PAR1`
    (a truncated or overwritten file does not). Reads 8 bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0, 2)
            if f.tell() < 12:
                return False
            f.seek(-4, 2)
            return head == b"PAR1" and f.read(4) == b"PAR1"
    except OSError:
        return False
