"""Sparse codes: per row, the indices and values of at most k nonzeros (``SparseCodes``).

z_n[indices[n, t]] = values[n, t]; unused slots hold value 0 (their index is arbitrary, 0 by
convention), so sums over slots never need a mask. This is JAX's BCOO layout with one batch
dimension (``to_bcoo``), kept as an ``eqx.Module`` so that it passes through ``jit``/``vmap``.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .validate import host_view


class SparseCodes(eqx.Module):
    """Codes of shape (n_samples, width) with ≤ k nonzeros per row: z_n = Σ_t values[n,t] e_{indices[n,t]}.

    Build them with ``SparseCodes.from_dense`` or ``encode(..., sparse=True)``; ``decode``,
    ``dictionary_loss``, ``wide_lower_bound``, ``check_optimality`` and ``hull_table`` accept them
    wherever they accept dense codes, with equal results.
    """

    indices: Int[Array, "n_samples k"]
    values: Float[Array, "n_samples k"]
    width: int = eqx.field(static=True)

    def __check_init__(self):
        if self.indices.shape != self.values.shape or len(self.values.shape) != 2:
            raise ValueError(
                f"`indices` {self.indices.shape} and `values` {self.values.shape} must have one "
                "2-D shape (n_samples, k)"
            )
        if self.width < 1:
            raise ValueError(f"`width` must be ≥ 1, got {self.width}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0], self.width)

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def k(self) -> int:
        """Slots per row (the largest support it can hold)."""
        return self.values.shape[1]

    @classmethod
    def from_dense(
        cls, codes: Float[ArrayLike, "n_samples width"], k: int | None = None
    ) -> SparseCodes:
        """The nonzeros of dense ``codes``. ``k`` defaults to the largest row support (≥ 1; needs
        concrete codes); a k smaller than some row's support is a ValueError, never a silent
        truncation (inside ``jit`` pass k, and rows with more nonzeros keep their k largest |z|)."""
        Z = jnp.asarray(codes)
        if Z.ndim != 2:
            raise ValueError(f"`codes` must be 2-D (n_samples, width), got shape {Z.shape}")
        traced = isinstance(Z, jax.core.Tracer)
        if not traced:
            support = int(_max_support(Z))
            if k is None:
                k = max(support, 1)
            elif support > k:
                raise ValueError(
                    f"a row of `codes` has {support} nonzeros, more than k = {k}; pass k ≥ {support}"
                )
        elif k is None:
            raise ValueError("inside jit, SparseCodes.from_dense needs an explicit k")
        k = int(min(max(k, 1), Z.shape[1]))
        idx, vals = _largest(Z, k)
        return cls(idx, vals, int(Z.shape[1]))

    def todense(self) -> Float[Array, "n_samples width"]:
        """The dense (n_samples, width) codes."""
        return dense_block(self.indices, self.values, self.width)

    def dense_rows(self, rows) -> Float[Array, "rows width"]:
        """Dense codes of the rows ``rows`` (a slice or an index array): O(rows × width) memory;
        numpy for codes on the host."""
        ind, val = self._rows(rows)
        return dense_block(ind, val, self.width)

    def _rows(self, rows):
        """(indices, values) of ``rows``: numpy slices of codes on the host (``host_view``:
        slicing a JAX array compiles a program for each new shape), else JAX arrays."""
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
        ind, val = (host_view(a) for a in (self.indices, self.values))
        if ind is None or val is None:
            ind, val = self.indices, self.values
        return ind[rows], val[rows]

    def sparse_rows(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of the rows ``rows`` (a slice or an index array) as numpy arrays."""
        ind, val = self._rows(rows)
        return np.asarray(ind), np.asarray(val)

    def rows(self, start: int, stop: int) -> SparseCodes:
        """Rows [start, stop) as ``SparseCodes``."""
        return SparseCodes(self.indices[start:stop], self.values[start:stop], self.width)

    @property
    def nnz(self) -> Int[Array, ""]:
        """The number of nonzero codes."""
        return _count_nonzero(jnp.asarray(self.values))

    def to_bcoo(self):
        """The same codes as a ``jax.experimental.sparse.BCOO`` matrix (n_batch = 1)."""
        from jax.experimental import sparse

        v, i = jnp.asarray(self.values), jnp.asarray(self.indices)
        return sparse.BCOO((v, i[..., None]), shape=self.shape, indices_sorted=False)


def dense_block(indices, values, width: int):
    """Dense (rows, width) codes of sparse (indices, values) rows (unused slots add 0). numpy in,
    numpy out (no compile per shape: codes read from disk come in blocks of many shapes)."""
    if isinstance(values, np.ndarray) and isinstance(indices, np.ndarray):
        out = np.zeros((values.shape[0], width), values.dtype)
        used = values != 0  # unused slots (value 0, index 0) must not overwrite a code of atom 0
        rows = np.broadcast_to(np.arange(values.shape[0])[:, None], values.shape)
        out[rows[used], indices[used]] = values[used]
        return out
    return _dense_block(jnp.asarray(indices), jnp.asarray(values), width)


@functools.partial(jax.jit, static_argnums=2)
def _dense_block(indices, values, width: int):
    rows = jnp.arange(values.shape[0])[:, None]
    return jnp.zeros((values.shape[0], width), values.dtype).at[rows, indices].add(values)


@functools.partial(jax.jit, static_argnums=1)
def _largest(Z, k: int):
    """(indices, values) of the k largest |z| of each row; unused slots (value 0) at index 0."""
    _, idx = jax.lax.top_k(jnp.abs(Z), k)
    vals = jnp.take_along_axis(Z, idx, axis=1)
    return jnp.where(vals != 0, idx, 0).astype(jnp.int32), vals


_max_support = jax.jit(lambda Z: jnp.max(jnp.sum(Z != 0, axis=1), initial=0))
_count_nonzero = jax.jit(lambda v: jnp.sum(v != 0))


def sparse_decode(indices, values, atoms):
    """D z_n for sparse rows: Σ_t values[n,t] d_{indices[n,t]}, (rows, n_features), one slot t at
    a time (a loop of row gathers: never the (rows, k, n_features) array of gathered atoms, which
    was 19× slower on CPU at 1024 rows, k = 64, d = 768)."""
    atoms, indices = jnp.asarray(atoms), jnp.asarray(indices)
    values = jnp.asarray(values, atoms.dtype)
    acc = jnp.zeros((values.shape[0], atoms.shape[1]), atoms.dtype)
    return jax.lax.fori_loop(
        0, values.shape[1], lambda t, a: a + values[:, t, None] * atoms[indices[:, t]], acc
    )


def concatenate(parts: list[SparseCodes]) -> SparseCodes:
    """Row blocks of ``SparseCodes`` as one, each padded to the largest k (numpy blocks, such as a
    ``CodeStore``'s, stay numpy)."""
    xp = np if all(isinstance(p.values, np.ndarray) for p in parts) else jnp
    k = max(p.k for p in parts)

    def pad(a):
        return xp.pad(xp.asarray(a), ((0, 0), (0, k - a.shape[1])))

    return SparseCodes(
        xp.concatenate([pad(p.indices) for p in parts]),
        xp.concatenate([pad(p.values) for p in parts]),
        parts[0].width,
    )
