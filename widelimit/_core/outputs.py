"""Output paths checked before any work starts: a bad ``-o``/``out_dir`` is a one-line
``ValueError`` at once, not a traceback after a long run."""

from __future__ import annotations

import os
from collections.abc import Iterable

TMP_SUFFIX = ".tmp"  # atomic_write's temporary files: ``<path>.tmp``


def check_output_dir(
    directory: str, files: Iterable[str] = (), subdirs: Iterable[str] = (), *, name: str = "output"
) -> None:
    """ValueError unless ``directory`` is (or can be created as) a writable directory in which
    ``files`` can be written and ``subdirs`` created. Creates nothing."""
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{name} {directory!r} is a file, not a directory")
    for f in files:
        p = os.path.join(directory, f)
        if os.path.isdir(p):
            raise ValueError(f"{p!r} is a directory where {name} writes a file; move it away")
    for s in subdirs:
        p = os.path.join(directory, s)
        if os.path.exists(p) and not os.path.isdir(p):
            raise ValueError(f"{p!r} is a file where {name} writes a directory; move it away")
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot create {name} {directory!r}: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {name} {directory!r}: {existing!r} is not writable")


def remove_stale_tmp(directory: str) -> list[str]:
    """Delete the ``*.tmp`` files a killed writer left in ``directory`` (call while holding its
    lock, so that no live writer owns them); returns their names."""
    gone = []
    for f in os.listdir(directory):
        p = os.path.join(directory, f)
        if f.endswith(TMP_SUFFIX) and os.path.isfile(p):
            os.remove(p)
            gone.append(f)
    return gone
