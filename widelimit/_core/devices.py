"""Data parallelism over devices: rows split over a 1-D mesh named ``rows``, parameters replicated
(``jax.sharding``; XLA partitions the compiled programs, so results equal one device's)."""

from __future__ import annotations

import jax
import numpy as np


def row_mesh(devices):
    """A 1-D mesh named ``rows`` over ``devices`` (``"all"``: every device of every process)."""
    from jax.sharding import Mesh

    devices = jax.devices() if devices == "all" else list(devices)
    if not devices:
        raise ValueError("`devices` is empty")
    return Mesh(np.array(devices), ("rows",))


def shard_rows(mesh, *arrays):
    """``arrays`` with their leading (row) axis split over ``mesh``'s ``rows`` axis."""
    from jax.sharding import NamedSharding, PartitionSpec

    return tuple(
        jax.device_put(a, NamedSharding(mesh, PartitionSpec("rows", *([None] * (a.ndim - 1)))))
        for a in arrays
    )


def replicate(mesh, *arrays):
    from jax.sharding import NamedSharding, PartitionSpec

    return tuple(jax.device_put(a, NamedSharding(mesh, PartitionSpec())) for a in arrays)
