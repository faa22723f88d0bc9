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

    return tuple(jax.device_put(a, row_sharding(mesh, a.ndim)) for a in arrays)


def replicate(mesh, *arrays):
    """``arrays`` copied to every device of ``mesh``."""
    from jax.sharding import NamedSharding, PartitionSpec

    return tuple(jax.device_put(a, NamedSharding(mesh, PartitionSpec())) for a in arrays)


def row_sharding(mesh, ndim: int):
    """The sharding of an ``ndim`` array whose leading (row) axis is split over ``mesh``."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec("rows", *([None] * (ndim - 1))))
