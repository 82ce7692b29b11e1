"""Atomic file writes: write to a temporary name in the same directory, fsync, rename.

A reader (or a resumed run) sees either the old file or the complete new one, never a partial
write. Temporary names start with `.tmp-` so directory scans can ignore and clean them. A failed
write (a full disk, a read-only directory) removes its temporary and raises an OSError that names
the file it was writing.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

TMP_PREFIX = ".tmp-"


def tmp_path_for(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file below `path`, then the directories themselves."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


def naming(error: OSError, path: Path) -> OSError:
    """`error` with `path` as its file name (an ENOSPC from write() names no file)."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise naming(e, path) from e
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a read-only directory, where the temporary was never created
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
