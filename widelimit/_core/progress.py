"""Progress of long jobs (fits, sweeps): a bar with ETA where a person watches, lines in a log.

``progress=None`` (the default) shows a ``rich.progress`` bar when stderr is a terminal or a
Jupyter notebook, and nothing otherwise; ``True`` always reports (one plain, newline-terminated
line per update when stderr is not interactive, so log files stay readable); ``False`` never does.
rich is optional (``pip install 'widelimit[progress]'``); without it the plain lines are used.
"""

from __future__ import annotations

import sys
import time


def _interactive() -> bool:
    try:
        from rich.console import Console
    except ImportError:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    console = Console(stderr=True)
    return console.is_terminal or console.is_jupyter


def _format(info: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


class Progress:
    """``update(done, **info)`` after each unit of work, ``close()`` at the end."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label = total, label
        self.start = time.perf_counter()
        interactive = _interactive()
        self.mode = "off"
        self._bar = None
        if enabled is None:
            enabled = interactive
        if not enabled:
            return
        self.mode = "lines"
        if interactive:
            try:
                from rich import progress as rp
            except ImportError:
                return
            self._bar = rp.Progress(
                rp.TextColumn("{task.description}"),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TimeElapsedColumn(),
                rp.TextColumn("eta"),
                rp.TimeRemainingColumn(),
                rp.TextColumn("{task.fields[info]}"),
                console=rp.Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total, info="")
            self._bar.start()
            self.mode = "rich"

    def eta(self, done: int) -> float | None:
        """Seconds left at the mean rate so far (None before the first unit)."""
        if done <= 0:
            return None
        return (time.perf_counter() - self.start) / done * max(self.total - done, 0)

    def update(self, done: int, **info):
        if self.mode == "rich":
            self._bar.update(self._task, completed=done, info=_format(info))
        elif self.mode == "lines":
            el = time.perf_counter() - self.start
            eta = self.eta(done)
            left = "?" if eta is None else f"{eta:.1f}s"
            sys.stderr.write(
                f"{self.label} {done}/{self.total} [{el:.1f}s, eta {left}] {_format(info)}\n"
            )
            sys.stderr.flush()

    def close(self):
        if self.mode == "rich":
            self._bar.stop()
        self.mode = "off"
