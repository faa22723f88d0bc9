"""All-pairs feature–feature hull bounds (SPEC §4.5) from top activations and sparse supports.

For every ordered pair (i, j): lo_ij = min and hi_ij = max of z_j(n) over I_i = {n : z_i(n) = 0}.
Never materialises N × K × K:
- lo_ij = 0 whenever |S_i| + |S_j| < N (then some n has z_i = z_j = 0), where S_k = supp z_k;
- hi_ij = z_j at the first of j's top-T activations where z_i = 0 (a K × T × K boolean scan in
  blocks of j);
- what those shortcuts cannot decide (pairs touching a feature active on ≥ N/2 points, or pairs
  where i is active on all of j's top T points) is computed exactly in one streamed pass.
Codes are read in row chunks (numpy arrays and memmaps are never copied whole).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._core.objective import check_sparse
from .._core.paired_blocks import check_code_chunk, code_rows
from .._core.precision import full_precision
from .._core.validate import check_matrix, float_dtype


class HullTable(eqx.Module):
    """lo, hi (K × K) of z_j over I_i; target (1 − c_ij) μ_j; signed margin (< 0: violated)."""

    lo: Float[Array, "width width"]
    hi: Float[Array, "width width"]
    target: Float[Array, "width width"]
    margin: Float[Array, "width width"]
    mu: Float[Array, " width"]
    support: Int[Array, " width"]
    n_exact_pairs: int = eqx.field(static=True)


def pair_margin(lo, hi, target, fit_bias: bool):
    """Signed hull margin (< 0: violated): min(target − lo, hi − target) with a bias (−inf when
    I_i is empty); without a bias −target iff target > 0 and no n ∈ I_i has z_j > 0, else +inf."""
    if fit_bias:
        return jnp.minimum(target - lo, hi - target)
    return jnp.where(target > 0, jnp.where(hi > 0, jnp.inf, -target), jnp.inf)


def hull_margin(lo, hi, target, mu, fit_bias: bool):
    """``pair_margin`` for all pairs; diagonal pairs and features with μ_j = 0 get +inf."""
    margin = pair_margin(lo, hi, target, fit_bias)
    relevant = ~jnp.eye(mu.shape[0], dtype=bool) & (mu[None, :] > 0)
    return jnp.where(relevant, margin, jnp.inf)


def row_chunks(Z, w, rows):
    """Yield (offset, chunk, weights) in ``rows``-row chunks, the last one padded with zero rows
    of zero weight (so every chunk has one shape, and rows of zero weight mark what to ignore)."""
    n = Z.shape[0]
    for s in range(0, n, rows):
        zc = code_rows(Z, s, s + rows)
        wc = jnp.asarray(w[s : s + rows])
        m = zc.shape[0]
        if m < rows:
            zc = jnp.pad(zc, ((0, rows - m), (0, 0)))
            wc = jnp.pad(wc, (0, rows - m))
        yield s, zc, wc


def off_bounds(Z, valid, zi):
    """(min, max) of each column z_j over the valid rows where zi ≤ 0: the hull bounds (lo_ij,
    hi_ij) of one feature i over the rows of Z (+inf, −inf where there are none)."""
    off = ((zi <= 0) & valid)[:, None]
    inf = jnp.asarray(jnp.inf, Z.dtype)
    return jnp.min(jnp.where(off, Z, inf), 0), jnp.max(jnp.where(off, Z, -inf), 0)


@eqx.filter_jit
def _scan_chunk(state, zc, wc, offset, top: int):
    """Running support counts, weighted masses and top-T activations (values, row indices) of
    the rows with positive weight."""
    count, mass, tv, ti = state
    valid = wc > 0
    active = (zc > 0) & valid[:, None]
    count = count + jnp.sum(active, axis=0, dtype=count.dtype)
    mass = mass + wc @ zc
    vals, idx = jax.lax.top_k(jnp.where(valid[None, :], zc.T, -1), min(top, zc.shape[0]))
    cv = jnp.concatenate([tv, vals], axis=1)
    ci = jnp.concatenate([ti, idx + offset], axis=1)
    tv, pos = jax.lax.top_k(cv, top)
    ti = jnp.take_along_axis(ci, pos, axis=1)
    return count, mass, tv, ti


@jax.jit
def _depth_block(rows, count_j):
    """depth[b, i] = number of leading top points of feature j_b where z_i > 0 (rows: B × T × K)."""
    t = jnp.arange(rows.shape[1])
    active = (rows > 0) & (t[None, :] < count_j[:, None])[:, :, None]
    return jnp.sum(jnp.cumprod(active, axis=1, dtype=jnp.int32), axis=1)


@jax.jit
def _exact_chunk(acc, zc, wc, dense_idx, pair_i, pair_j):
    """Exact min/max of z_j over {z_i = 0, w > 0} for rows i ∈ dense, columns j ∈ dense, and pairs."""
    rlo, rhi, clo, chi, plo, phi = acc
    valid = wc > 0
    inf = jnp.asarray(jnp.inf, zc.dtype)
    zc_in = jnp.where(valid[:, None], zc, inf)  # invalid rows never win a min ...
    zc_ax = jnp.where(valid[:, None], zc, -inf)  # ... or a max

    def rows_of(h):  # i = h dense: over n with z_h(n) = 0, all j
        return off_bounds(zc, valid, zc[:, h])

    def cols_of(h):  # j = h dense: over n with z_i(n) = 0, all i
        off = zc <= 0
        zin, zax = jnp.take(zc_in, h, axis=1)[:, None], jnp.take(zc_ax, h, axis=1)[:, None]
        return jnp.min(jnp.where(off, zin, inf), 0), jnp.max(jnp.where(off, zax, -inf), 0)

    a, b = jax.lax.map(rows_of, dense_idx)
    c, d = jax.lax.map(cols_of, dense_idx)
    off = jnp.take(zc, pair_i, axis=1) <= 0
    zj_in, zj_ax = jnp.take(zc_in, pair_j, axis=1), jnp.take(zc_ax, pair_j, axis=1)
    e = jnp.min(jnp.where(off, zj_in, inf), 0)
    f = jnp.max(jnp.where(off, zj_ax, -inf), 0)
    return (
        jnp.minimum(rlo, a),
        jnp.maximum(rhi, b),
        jnp.minimum(clo, c),
        jnp.maximum(chi, d),
        jnp.minimum(plo, e),
        jnp.maximum(phi, f),
    )


def _take_rows(Z, idx):
    """Rows ``idx`` of Z. Indices past the data (top-T slots a feature has no active row for, which
    may point into padding) are clipped: ``_depth_block`` ignores those slots anyway."""
    idx = np.minimum(idx, Z.shape[0] - 1)
    if hasattr(Z, "dense_rows"):  # SparseCodes or a CodeStore
        return jnp.asarray(Z.dense_rows(idx))
    if isinstance(Z, jax.Array):
        return jnp.take(Z, jnp.asarray(idx), axis=0)
    order = np.argsort(idx, kind="stable")  # sorted reads: sequential on a memmap
    out = np.empty((len(idx), Z.shape[1]), Z.dtype)
    out[order] = Z[idx[order]]
    return jnp.asarray(out)


@full_precision
def hull_table(
    codes: Float[ArrayLike, "n_samples width"],
    atoms: Float[ArrayLike, "width n_features"],
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    fit_bias: bool = True,
    top: int = 32,
    chunk_rows: int = 8192,
    block: int = 128,
) -> HullTable:
    """The hull condition for all K² ordered pairs, in O(NK + K²T) time and O(K² + chunk·K) memory.

    ``codes`` may be a JAX/numpy array, a memmap, ``SparseCodes`` or a ``CodeStore`` (read in
    ``chunk_rows`` row chunks, densified one chunk at a time); codes must be
    ≥ 0 and atoms unit rows (``check_optimality`` validates both). Rows with zero weight are ignored.
    """
    D = check_matrix(atoms, "atoms")
    if isinstance(codes, (list, tuple)):
        codes = np.asarray(codes)
    if len(getattr(codes, "shape", ())) != 2 or codes.shape[0] < 1:
        raise ValueError(
            f"`codes` must be 2-D (n_samples, width) with ≥ 1 row, got shape "
            f"{tuple(getattr(codes, 'shape', ()))}"
        )
    float_dtype(codes, "codes")
    if codes.shape[1] != D.shape[0]:
        raise ValueError(f"`codes` has {codes.shape[1]} columns but there are {D.shape[0]} atoms")
    check_sparse(codes)
    dt = jnp.result_type(D.dtype, code_rows(codes, 0, 1).dtype)  # canonical (float32 without x64)
    n, k = codes.shape
    w = np.ones(n) if weights is None else np.asarray(weights)
    w = (w * (n / np.sum(w))).astype(dt)
    n_pos = int(np.sum(w > 0))  # rows of zero weight are masked in every kernel, never copied
    top = int(min(top, n))
    rows = int(min(chunk_rows, n))

    # pass 1: supports, masses, top activations
    state = (
        jnp.zeros((k,), jnp.int32),
        jnp.zeros((k,), dt),
        jnp.full((k, top), -1, dt),
        jnp.zeros((k, top), jnp.int32),
    )
    for s, zc, wc in row_chunks(codes, w, rows):
        check_code_chunk(zc, s)
        state = _scan_chunk(state, zc.astype(dt), wc, jnp.int32(s), top)
    count, mass, tv, ti = state
    mu = mass / n
    C = D @ D.T
    target = (1 - C) * mu[None, :]

    # top activations decide hi for pairs of sparse features
    count_np = np.asarray(count)
    dense = count_np * 2 >= n_pos
    ti_np = np.asarray(ti)
    depth = np.empty((k, k), np.int32)  # depth[j, i]
    for s in range(0, k, block):
        idx = ti_np[s : s + block]
        r = _take_rows(codes, idx.reshape(-1)).reshape(idx.shape[0], top, k)
        depth[s : s + block] = np.asarray(_depth_block(r, count[s : s + block]))
    limit = np.minimum(count_np, top)[:, None]  # per j
    tv_np = np.asarray(tv)
    hi_T = np.where(
        depth < limit, np.take_along_axis(tv_np, np.minimum(depth, top - 1), axis=1), 0.0
    )
    unresolved = (depth >= top) & (count_np[:, None] > top)  # i active on all of j's top T
    unresolved &= ~dense[:, None] & ~dense[None, :] & ~np.eye(k, dtype=bool)
    hi = hi_T.T.astype(dt)  # hi[i, j]
    lo = np.zeros((k, k), dt)

    # exact pass for what the shortcuts leave open
    dense_idx = np.flatnonzero(dense).astype(np.int32)
    pj, pi = np.nonzero(unresolved)
    if len(dense_idx) or len(pi):
        h, u = len(dense_idx), len(pi)
        inf = np.inf
        acc = (
            jnp.full((h, k), inf, dt),
            jnp.full((h, k), -inf, dt),
            jnp.full((h, k), inf, dt),
            jnp.full((h, k), -inf, dt),
            jnp.full((u,), inf, dt),
            jnp.full((u,), -inf, dt),
        )
        di, ai, aj = jnp.asarray(dense_idx), jnp.asarray(pi, jnp.int32), jnp.asarray(pj, jnp.int32)
        for _, zc, wc in row_chunks(codes, w, rows):
            acc = _exact_chunk(acc, zc.astype(dt), wc, di, ai, aj)
        rlo, rhi, clo, chi, plo, phi = (np.asarray(a) for a in acc)
        lo[pi, pj], hi[pi, pj] = plo, phi
        lo[:, dense_idx], hi[:, dense_idx] = clo.T, chi.T
        lo[dense_idx, :], hi[dense_idx, :] = rlo, rhi
    lo, hi = jnp.asarray(lo), jnp.asarray(hi)
    margin = hull_margin(lo, hi, target, mu, fit_bias)
    return HullTable(lo, hi, target, margin, mu, count, int(len(dense_idx) * 2 * k + len(pi)))


def dense_hull_table(codes, atoms, w, fit_bias: bool) -> HullTable:
    """``hull_table`` as one traceable program (used inside a caller's ``jit``/``vmap``): lo_ij and
    hi_ij are the min and max of z_j over I_i ∩ {w > 0}, one feature i at a time (``lax.map``), in
    O(NK²) time and O(NK) memory."""
    Z, D = codes, atoms
    n = Z.shape[0]
    w = w * (n / jnp.sum(w))
    valid = w > 0
    lo, hi = jax.lax.map(lambda zi: off_bounds(Z, valid, zi), Z.T)
    mu = (w @ Z) / n
    target = (1 - D @ D.T) * mu[None, :]
    margin = hull_margin(lo, hi, target, mu, fit_bias)
    support = jnp.sum((Z > 0) & valid[:, None], axis=0, dtype=jnp.int32)
    return HullTable(lo, hi, target, margin, mu, support, 0)
