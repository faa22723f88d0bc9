"""Parallelism over devices (``jax.sharding``; XLA partitions the compiled programs, or, for the
exact code solve, ``jax.shard_map`` runs it on each device's rows; results equal one device's): rows
split over a 1-D mesh named ``rows`` with parameters replicated, or
(``Placement`` with ``axis="atoms"``) atoms and code columns split over a mesh named ``atoms``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np


def row_mesh(devices):
    """A 1-D mesh named ``rows`` over ``devices`` (``"all"``: every device of every process)."""
    from jax.sharding import Mesh

    devices = jax.devices() if devices == "all" else list(devices)
    if not devices:
        raise ValueError("`devices` is empty")
    return Mesh(np.array(devices), ("rows",))


def per_device(f, mesh, in_specs, out_specs):
    """``f`` run on each device's shards of ``mesh`` (``jax.shard_map``; the experimental one
    before jax 0.6), without the replication check, so that loops may run per-device trip counts."""
    try:
        from jax import shard_map

        return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    except ImportError:  # jax < 0.6
        from jax.experimental.shard_map import shard_map

        return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def shard_rows(mesh, *arrays):
    """``arrays`` with their leading (row) axis split over ``mesh``'s ``rows`` axis."""

    return tuple(jax.device_put(a, row_sharding(mesh, a.ndim)) for a in arrays)


def replicate_tree(mesh, tree):
    """Every array of ``tree`` on every device of ``mesh``, also across the processes of a
    ``jax.distributed`` run (each process passes its own, equal, copy: no comparison, so NaN
    placeholders pass); PRNG key arrays keep their type."""
    from jax.sharding import NamedSharding, PartitionSpec

    full = NamedSharding(mesh, PartitionSpec())

    def put(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(a)
            return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=impl)
        if jax.process_count() == 1:
            return jax.device_put(a, full)
        return jax.make_array_from_process_local_data(full, np.asarray(a))

    return jax.tree.map(put, tree)


def row_sharding(mesh, ndim: int):
    """The sharding of an ``ndim`` array whose leading (row) axis is split over ``mesh``."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec("rows", *([None] * (ndim - 1))))


class Placement(NamedTuple):
    """Where a blocked analysis puts its arrays on a 1-D mesh over devices: split along data rows
    (``axis="rows"``: X, weights and code rows split, atoms replicated) or along atoms
    (``axis="atoms"``: atoms and code columns split, X replicated; for widths beyond one device's
    memory). XLA partitions the same program either way, so results equal one device's."""

    mesh: Any
    axis: str

    @property
    def row_multiple(self) -> int:
        """Rows per block must be a multiple of this (the devices the rows are split over)."""
        return self.mesh.devices.size if self.axis == "rows" else 1

    def _put(self, spec, arrays):
        from jax.sharding import NamedSharding, PartitionSpec

        return tuple(
            jax.device_put(a, NamedSharding(self.mesh, PartitionSpec(*spec(a.ndim))))
            for a in arrays
        )

    def rows(self, *arrays):
        """Arrays indexed by data row (X blocks, weights)."""
        split = self.axis == "rows"
        return self._put(lambda n: ("rows",) + (None,) * (n - 1) if split else (), arrays)

    def atoms(self, *arrays):
        """Arrays indexed by atom (the atoms, per-atom scales)."""
        split = self.axis == "atoms"
        return self._put(lambda n: ("atoms",) + (None,) * (n - 1) if split else (), arrays)

    def codes(self, *arrays):
        """(rows, width) code blocks: rows split, or columns split."""
        return self._put(
            lambda n: ("rows", None) if self.axis == "rows" else (None, "atoms"), arrays
        )

    def replicated(self, *arrays):
        """Arrays every device holds whole (the bias, λ)."""
        return tuple(replicate_tree(self.mesh, list(arrays)))


def placement(devices, shard: str = "rows", width: int | None = None) -> Placement | None:
    """The ``Placement`` for ``devices`` (None: the default device) split along ``shard``
    (``"rows"`` or ``"atoms"``); ValueError for an unknown ``shard``, ``"atoms"`` without devices,
    or a width the devices do not divide."""
    if shard not in ("rows", "atoms"):
        raise ValueError(f"`shard` must be 'rows' or 'atoms', got {shard!r}")
    if devices is None:
        if shard == "atoms":
            raise ValueError("shard='atoms' splits the atoms over `devices`: pass devices='all'")
        return None
    from jax.sharding import Mesh

    mesh = row_mesh(devices)
    mesh = Mesh(mesh.devices, (shard,))
    n = mesh.devices.size
    if shard == "atoms" and width is not None and width % n:
        raise ValueError(
            f"shard='atoms' needs a width divisible by the {n} devices, got width {width}"
        )
    return Placement(mesh, shard)
