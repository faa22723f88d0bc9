"""Rows of X and of their codes read together in fixed-shape blocks, for analyses of data and
codes larger than memory (``padded_blocks``): memory is one block of rows plus O(width × d).

X may be anything ``ActivationStore`` reads; codes a dense array or memmap, ``SparseCodes`` or a
``CodeStore``. Each block is padded to one shape with rows x = b, z = 0 of weight 0 (residual 0,
so they add nothing to any sum or maximum), so a new N compiles nothing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .row_buckets import block_cap
from .store import as_store
from .validate import all_finite, any_negative, host_view


def code_rows(codes, start: int, stop: int):
    """Dense codes of rows [start, stop) of any codes, in the canonical dtype (float32 without
    x64): numpy for codes on the host (a numpy array, a memmap, codes on disk, JAX arrays on the
    CPU), so that reading a block compiles nothing; else a JAX array."""
    if hasattr(codes, "dense_rows"):
        rows = codes.dense_rows(slice(start, stop))
    else:
        host = host_view(codes)
        rows = (codes if host is None else host)[start:stop]
    dt = jax.dtypes.canonicalize_dtype(rows.dtype)
    if isinstance(rows, jax.Array):
        return rows.astype(dt)
    return np.asarray(rows, dtype=dt)


def block_rows_for(width: int, n_features: int) -> int:
    """Rows per analysis block: about 2²⁴ numbers of codes or data (64 MiB of float32)."""
    return int(max(256, min(65536, (1 << 24) // max(width, n_features))))


def pad_code_rows(z, rows: int):
    """Codes ``z`` (from ``code_rows``) with zero rows appended up to ``rows``: in numpy for codes
    on the host, else one jitted program per shape (an eager ``jnp.pad`` compiles for each m)."""
    if z.shape[0] == rows:
        return z
    if isinstance(z, np.ndarray):
        out = np.zeros((rows, z.shape[1]), z.dtype)
        out[: z.shape[0]] = z
        return out
    return _pad_rows(z, rows)


@functools.partial(jax.jit, static_argnums=1)
def _pad_rows(z, rows: int):
    return jnp.zeros((rows, z.shape[1]), z.dtype).at[: z.shape[0]].set(z)


_flags = jax.jit(lambda x, z: (jnp.all(jnp.isfinite(x)), jnp.all(jnp.isfinite(z)), jnp.all(z >= 0)))


def check_code_chunk(zc, start: int) -> None:
    """ValueError unless the row chunk ``zc`` (rows from ``start``) of the codes is finite and
    ≥ 0; checked chunk by chunk, so codes on disk are never loaded whole."""
    if host_view(zc) is not None:  # numpy (``all_finite``, ``any_negative``): nothing compiled
        finite, nonneg = all_finite(zc), not any_negative(zc)
    else:
        _, finite, nonneg = (bool(v) for v in _flags(jnp.zeros((1,), zc.dtype), zc))
    raise_bad_codes(finite, nonneg, start, zc.shape[0])


def raise_bad_codes(finite: bool, nonneg: bool, start: int, rows: int) -> None:
    where = f"rows {start}..{start + rows - 1}"
    if not finite:
        raise ValueError(f"`codes` contains NaN or Inf (non-finite) in {where}")
    if not nonneg:
        raise ValueError(f"`codes` must be nonnegative: a negative code in {where}")


def check_codes_shape(codes, n_rows: int | None, width: int) -> None:
    """ValueError unless ``codes`` has shape (n_rows, width) (n_rows None: unknown, any)."""
    shape = tuple(getattr(codes, "shape", ()))
    if len(shape) != 2 or shape[1] != width or (n_rows is not None and shape[0] != n_rows):
        raise ValueError(
            f"`codes` must have shape (n_samples, width) = ({n_rows}, {width}), got {shape}"
        )


def _open(X, D, codes, weights):
    """(store, rows per block, weights or None), with shapes checked."""
    K, d = D.shape
    rows = block_rows_for(K, d)
    store = as_store(X, chunk_rows=2 * rows)
    rows = block_cap(rows, store.n_rows)  # a small store's blocks are not padded to a large one
    if store.n_features != d:
        raise ValueError(f"`atoms` has {d} features but `X` has {store.n_features}")
    check_codes_shape(codes, store.n_rows, K)
    if store.weights is not None and weights is not None:
        raise ValueError("pass weights either to the ActivationStore or as `weights`, not both")
    if weights is None:
        return store, rows, store.weights
    w = np.asarray(weights, np.float64)
    if w.shape != (codes.shape[0],):
        raise ValueError(f"`weights` must have shape ({codes.shape[0]},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError("`weights` must be finite, ≥ 0 and not all 0")
    return store, rows, w


def padded_blocks(X, D, codes, b, *, weights=None, place=None):
    """(first row, real rows m, X block, dense code block, weights) padded to one shape with rows
    x = b, z = 0, w = 0; raises ValueError for non-finite X, non-finite or negative codes. With a
    ``Placement`` the blocks are split over its devices (rows, or code columns)."""
    store, rows, w_all = _open(X, D, codes, weights)
    if place is not None:
        rows = -(-rows // place.row_multiple) * place.row_multiple
    K, d = D.shape
    dt = np.dtype(D.dtype)
    b_host = np.asarray(b, dt)
    start = 0
    for _, block in store.blocks():
        for s in range(0, block.shape[0], rows):
            xb = np.asarray(block[s : s + rows])
            m = xb.shape[0]
            if start + m > codes.shape[0]:
                raise ValueError(f"`X` has more rows than `codes` ({codes.shape[0]})")
            zb = code_rows(codes, start, start + m)
            wb = np.ones(m) if w_all is None else w_all[start : start + m]
            # padded on the host (eager .at[].set compiles for each new m)
            xp, wp = np.empty((rows, d), dt), np.zeros((rows,), dt)
            xp[:m], xp[m:], wp[:m] = xb, b_host, wb
            zp = pad_code_rows(zb if zb.dtype == dt else zb.astype(dt), rows)
            xp, zp, wp = jax.device_put((xp, zp, wp))
            fx, fz, nz = (bool(v) for v in _flags(xp, zp))
            if not fx:
                raise ValueError(f"`X` contains NaN or Inf in rows {start}..{start + m - 1}")
            raise_bad_codes(fz, nz, start, m)
            if place is not None:
                (xp, wp), (zp,) = place.rows(xp, wp), place.codes(zp)
            yield start, m, xp, zp, wp
            start += m
    if start != codes.shape[0]:
        raise ValueError(f"`X` has {start} rows but `codes` has {codes.shape[0]}")


def streamed_max_centred(X, D, codes, b, center, *, weights=None) -> float:
    """max over rows of positive weight of ||r_n − center|| (the second pass of the residual dual
    bound with a bias), block by block."""
    best = 0.0
    for _, _, xp, zp, wp in padded_blocks(X, D, codes, b, weights=weights):
        best = max(best, float(_max_centred(xp, D, zp, b, center, wp)))
    return best


@jax.jit
def _max_centred(X, D, Z, b, center, w):
    R = X - b - Z @ D - center
    return jnp.max(jnp.where(w > 0, jnp.linalg.norm(R, axis=1), 0), initial=0.0)
