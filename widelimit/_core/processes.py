"""Sums and maxima across the processes of a ``jax.distributed`` run (JAX's own collectives,
``multihost_utils``); the identity in a single process.

A multi-process run gives each process its own rows (``ActivationStore.part``); the statistics a
solver needs from all rows are sums or maxima of per-process statistics, reduced here on the host
in float64, so that every process takes the same steps and reaches the same answer.
"""

from __future__ import annotations

import jax
import numpy as np


def _gather(x) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(x, np.float64)))


def sum_over_processes(x) -> np.ndarray:
    """Σ over processes of the float64 array ``x`` (``x`` itself with one process)."""
    if jax.process_count() == 1:
        return np.asarray(x, np.float64)
    return _gather(x).sum(axis=0)


def max_over_processes(x) -> np.ndarray:
    """Elementwise max over processes of ``x``."""
    if jax.process_count() == 1:
        return np.asarray(x, np.float64)
    return _gather(x).max(axis=0)


def from_first_process(x) -> np.ndarray:
    """Process 0's value of ``x`` on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(x)))


def bytes_of_processes(b: bytes) -> list[bytes]:
    """Every process's ``b`` (all the same length), in process order."""
    if jax.process_count() == 1:
        return [b]
    from jax.experimental import multihost_utils

    got = multihost_utils.process_allgather(np.frombuffer(b, np.uint8))
    return [np.asarray(row, np.uint8).tobytes() for row in np.asarray(got)]


def is_writer(distributed: bool) -> bool:
    """Whether this process writes a job's shared files: process 0 of a distributed job (whose
    state every process holds), every process otherwise."""
    return not distributed or jax.process_index() == 0
