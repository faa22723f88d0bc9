"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

write(tmp) → fsync(tmp) → rename(tmp, path) → fsync(directory). The temporary file sits beside
``path`` (same file system) and is removed if ``write`` fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then fsync it and rename it over ``path``."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp) and not os.path.isdir(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def atomic_write_bytes(path: str, write_to: Callable) -> None:
    """``atomic_write`` for writers that take an open binary file (``write_to(f)``)."""

    def write(tmp):
        with open(tmp, "wb") as f:
            write_to(f)

    atomic_write(path, write)


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
