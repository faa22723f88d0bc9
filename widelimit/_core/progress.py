"""A dependency-free progress line for long jobs (switch off with ``progress=False``)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True):
        self.total, self.label, self.enabled = total, label, enabled
        self.start = time.perf_counter()

    def update(self, done: int, **info):
        if not self.enabled:
            return
        extra = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
        )
        el = time.perf_counter() - self.start
        sys.stderr.write(f"\r{self.label} {done}/{self.total} [{el:6.1f}s] {extra}   ")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
