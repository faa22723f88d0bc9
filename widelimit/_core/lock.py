"""Exclusive output directories: an advisory ``flock`` on ``<dir>/.widelimit.lock``.

A second writer into the same directory (another process, or another call in this one) gets a
clear error at once. The kernel drops the lock when its holder dies, so a killed run never leaves
a stale lock behind. Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os

from .outputs import check_output_dir, remove_stale_tmp

LOCK_NAME = ".widelimit.lock"


@contextlib.contextmanager
def dir_lock(directory: str | None):
    """Hold the exclusive lock of ``directory`` (created if missing) for the ``with`` block; on
    entry, the temporary files a killed writer left there are removed."""
    if directory is None:
        yield
        return
    check_output_dir(directory, name="directory")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RuntimeError(
                f"{directory!r} is in use by another widelimit run (pid {holder}); wait for it or "
                "use another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        remove_stale_tmp(directory)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
