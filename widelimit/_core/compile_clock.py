"""Seconds spent compiling, from JAX's own monitoring events.

One process-wide listener (registered on first use; ``jax.monitoring`` has no public way to remove
one on the oldest supported JAX) adds up the durations of the events that make a compilation:
tracing to a jaxpr, lowering to MLIR and the backend compile. A result records
``compile_seconds()`` before and after its work; the difference is its compile time (in this
thread and any other compiling at the same time: the clock is process-wide).
"""

from __future__ import annotations

import threading

import jax

_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_lock = threading.Lock()
_total = [0.0]
_registered = [False]


def _listen(event: str, duration: float, **_kwargs) -> None:
    if event in _EVENTS:
        with _lock:
            _total[0] += float(duration)


def compile_seconds() -> float:
    """The process's compile time so far (s); the first call starts the clock at 0."""
    with _lock:
        if not _registered[0]:
            jax.monitoring.register_event_duration_secs_listener(_listen)
            _registered[0] = True
        return _total[0]
