"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

write(tmp) → fsync(tmp) → rename(tmp, path) → fsync(directory). The temporary file sits beside
``path`` (same file system) and is removed if ``write`` fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from .outputs import TMP_SUFFIX


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then fsync it and rename it over ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory; cannot write a file there")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {path!r}: the directory {parent!r} does not exist")
    tmp = path + TMP_SUFFIX
    kill_at = _fault_plan(path)
    try:
        write(tmp)
        if kill_at == "partial":  # a writer killed half way through its temporary file
            os.truncate(tmp, os.path.getsize(tmp) // 2)
            _die()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if kill_at == "written":
            _die()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp) and not os.path.isdir(tmp):
            os.remove(tmp)
        raise
    if kill_at == "renamed":
        _die()
    _fsync_dir(os.path.dirname(path) or ".")


_FAULT_ENV = "WIDELIMIT_FAULT_KILL_AT_WRITE"
_writes_seen = 0


def _fault_plan(path: str) -> str | None:
    """Fault injection for the kill tests (tests/test_fault_injection.py). With
    ``WIDELIMIT_FAULT_KILL_AT_WRITE="n:phase[:match]"`` the process SIGKILLs itself at its n-th
    atomic write (of a path containing ``match``) in ``phase``: ``partial`` (half the temporary
    file written), ``written`` (before the rename) or ``renamed`` (before the directory fsync).
    Unset (always, outside those tests) it does nothing."""
    plan = os.environ.get(_FAULT_ENV)
    if not plan:
        return None
    n, phase, *match = plan.split(":", 2)
    if match and match[0] not in os.path.basename(path):
        return None
    global _writes_seen
    _writes_seen += 1
    return phase if _writes_seen == int(n) else None


def _die():
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


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
