"""All-pairs feature–feature hull bounds (SPEC §4.5) from top activations and sparse supports.

For every ordered pair (i, j): lo_ij = min and hi_ij = max of z_j(n) over I_i = {n : z_i(n) = 0}.
Never materialises N × K × K:
- lo_ij = 0 whenever |S_i| + |S_j| < N (then some n has z_i = z_j = 0), where S_k = supp z_k;
- hi_ij = z_j at the first of j's top-T activations where z_i = 0: max z_j for every i but the
  (at most k) features active at j's top point, whose depth in j's top rows is found from those
  rows read sparse (O(K·T·k), k the largest support of a row);
- what those shortcuts cannot decide (pairs touching a feature active on ≥ N/2 points, or pairs
  where i is active on all of j's top T points) is computed exactly in one streamed pass.
Codes are read in row chunks (numpy arrays and memmaps are never copied whole). The K × K table,
or (``violated_only``) only the violated pairs, built a block of columns at a time.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._core.objective import check_sparse
from .._core.paired_blocks import check_code_chunk, code_rows, pad_code_rows, raise_bad_codes
from .._core.precision import full_precision
from .._core.validate import check_matrix, float_dtype, host_view, to_device


class HullTable(eqx.Module):
    """lo, hi (K × K) of z_j over I_i; target (1 − c_ij) μ_j; signed margin (< 0: violated)."""

    lo: Float[Array, "width width"]
    hi: Float[Array, "width width"]
    target: Float[Array, "width width"]
    margin: Float[Array, "width width"]
    mu: Float[Array, " width"]
    support: Int[Array, " width"]
    n_exact_pairs: int = eqx.field(static=True)


class HullPairs(eqx.Module):
    """The ordered pairs (i, j) that violate the hull condition by more than ``tol`` (severity
    −margin_ij/μ_j > tol), worst first, with their lo, hi, target and margin; per-atom counts of
    violations as the off feature i (``n_as_i``) and as j (``n_as_j``). Never a K × K array."""

    pairs: Int[np.ndarray, "n_violated 2"]
    lo: Float[np.ndarray, " n_violated"]
    hi: Float[np.ndarray, " n_violated"]
    target: Float[np.ndarray, " n_violated"]
    margin: Float[np.ndarray, " n_violated"]
    severity: Float[np.ndarray, " n_violated"]
    mu: Float[np.ndarray, " width"]
    support: Int[np.ndarray, " width"]
    n_as_i: Int[np.ndarray, " width"]
    n_as_j: Int[np.ndarray, " width"]
    tol: float = eqx.field(static=True)
    n_exact_pairs: int = eqx.field(static=True)


@functools.partial(jax.jit, static_argnames="fit_bias")
def pair_margin(lo, hi, target, fit_bias: bool):
    """Signed hull margin (< 0: violated): min(target − lo, hi − target) with a bias (−inf when
    I_i is empty); without a bias −target iff target > 0 and no n ∈ I_i has z_j > 0, else +inf."""
    if fit_bias:
        return jnp.minimum(target - lo, hi - target)
    return jnp.where(target > 0, jnp.where(hi > 0, jnp.inf, -target), jnp.inf)


@functools.partial(jax.jit, static_argnames="fit_bias")
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
        wc = np.asarray(w[s : s + rows])
        m = zc.shape[0]
        if m < rows:  # padded on the host when the codes are there (nothing to compile)
            wc = np.pad(wc, (0, rows - m))
            zc = pad_code_rows(zc, rows)
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


def _scan_sparse(state, ind, val, w, offset: int, top: int):
    """``_scan_chunk`` for sparse rows (indices, values) from row ``offset``, in numpy."""
    count, mass, tv, ti = state
    k = count.shape[0]
    raise_bad_codes(bool(np.all(np.isfinite(val))), bool(np.all(val >= 0)), offset, len(val))
    wc = w[offset : offset + len(val)]
    keep = (val > 0) & (wc > 0)[:, None]
    row = np.broadcast_to(np.arange(len(val))[:, None], val.shape)[keep] + offset
    feat, v = ind[keep].astype(np.int64), val[keep]
    count = count + np.bincount(feat, minlength=k).astype(count.dtype)
    mass = mass + np.bincount(ind.reshape(-1), (wc[:, None] * val).reshape(-1), k).astype(
        mass.dtype
    )
    order = np.lexsort((row, -v, feat))  # by feature, then value (largest first), then row
    feat, v, row = feat[order], v[order], row[order]
    rank = np.arange(len(feat)) - np.searchsorted(feat, feat)  # place within its feature
    sel = rank < top
    cv = np.full((k, 2 * top), -1, tv.dtype)
    ci = np.zeros((k, 2 * top), ti.dtype)
    cv[:, :top], ci[:, :top] = tv, ti
    cv[feat[sel], top + rank[sel]], ci[feat[sel], top + rank[sel]] = v[sel], row[sel]
    pos = np.argsort(-cv, axis=1, kind="stable")[:, :top]
    return count, mass, np.take_along_axis(cv, pos, 1), np.take_along_axis(ci, pos, 1)


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
    """Rows ``idx`` of dense codes Z (a JAX or numpy array, or a memmap)."""
    host = host_view(Z)  # a numpy array or memmap, or a JAX array on the host: read in numpy
    if host is None:
        return _take(Z, jnp.asarray(idx))
    Z = host
    order = np.argsort(idx, kind="stable")  # sorted reads: sequential on a memmap
    out = np.empty((len(idx), Z.shape[1]), Z.dtype)
    out[order] = Z[idx[order]]
    return jnp.asarray(out)


_take = jax.jit(lambda Z, idx: jnp.take(Z, idx, axis=0))


def _sparse_rows(codes, idx):
    """(indices, values) of rows ``idx`` as numpy (len(idx), m) arrays, value 0 in unused slots
    (m: the largest support among them). Indices past the data (top-T slots a feature has no
    active row for, which may point into padding) are clipped: those slots are ignored."""
    idx = np.minimum(idx, codes.shape[0] - 1)
    if hasattr(codes, "sparse_rows"):  # SparseCodes or a CodeStore
        return codes.sparse_rows(idx)
    Z = np.asarray(_take_rows(codes, idx))
    m = int(max(1, (Z > 0).sum(1).max(initial=0)))
    ind = np.argsort(-Z, axis=1)[:, :m] if m >= Z.shape[1] else np.argpartition(-Z, m - 1, 1)[:, :m]
    return ind, np.take_along_axis(Z, ind, 1)


def _depths(codes, ti, limit, top: int, block: int | None = None):
    """(i, j, depth) for every feature i active at j's top point: depth = how many of j's leading
    top points (of the ``limit[j]`` active ones) have z_i > 0. Any other i has depth 0. Rows are
    read sparse, ``top`` per feature j, in blocks of ``block`` features j (default: about 2²¹
    slots of rows at a time); membership by one sorted search."""
    k = ti.shape[0]
    width = getattr(codes, "k", None) or k  # a row's slots: its sparse k, or the dense width
    cols = block or int(max(1, min(k, (1 << 21) // (top * max(width, 1)))))
    out = []
    for j0 in range(0, k, cols):
        j1 = min(k, j0 + cols)
        b = j1 - j0
        ind, val = _sparse_rows(codes, ti[j0:j1].reshape(-1))
        m = ind.shape[1]
        active = (val.reshape(b, top, m) > 0) & (np.arange(top)[None, :] < limit[j0:j1, None])[
            :, :, None
        ]
        A = np.where(active, ind.reshape(b, top, m), -1).astype(np.int64)
        cand = A[:, 0, :]  # the features active at j's top point
        key = (np.arange(b * top, dtype=np.int64) * (k + 2)).reshape(b, top, 1)
        flat = (np.sort(A, axis=2) + 1 + key).reshape(-1)  # sorted: each (j, t) in its own range
        q = cand[:, None, :] + 1 + key
        pos = np.minimum(np.searchsorted(flat, q.reshape(-1)), flat.size - 1).reshape(q.shape)
        member = (flat[pos] == q) & (cand[:, None, :] >= 0)
        depth = np.cumprod(member, axis=1).sum(axis=1)
        bj, s = np.nonzero(cand >= 0)
        out.append((cand[bj, s], bj + j0, depth[bj, s]))
    i, j, d = (np.concatenate(c) for c in zip(*out, strict=True))
    return i, j, d


@functools.partial(jax.jit, static_argnames="fit_bias")
def _target_and_margin(D, mu, lo, hi, fit_bias: bool):
    """target_ij = (1 − c_ij) μ_j and ``hull_margin`` of the K × K table."""
    target = (1 - D @ D.T) * mu[None, :]
    return target, hull_margin(lo, hi, target, mu, fit_bias)


@functools.partial(jax.jit, static_argnames=("cols", "fit_bias"))
def _block_severity(D, Dp, mup, lo, hi, j0, cols: int, fit_bias: bool):
    """(target, margin, severity −margin/μ_j; −inf where not relevant) of the columns
    j0 … j0 + cols (D, μ padded to a whole number of blocks): K × cols each."""
    Db = jax.lax.dynamic_slice_in_dim(Dp, j0, cols)
    mu_b = jax.lax.dynamic_slice_in_dim(mup, j0, cols)
    target = (1 - D @ Db.T) * mu_b[None, :]
    margin = pair_margin(lo, hi, target, fit_bias)
    j = j0 + jnp.arange(cols)
    relevant = (jnp.arange(D.shape[0])[:, None] != j[None, :]) & (mu_b[None, :] > 0)
    sev = jnp.where(relevant, -margin / jnp.where(mu_b > 0, mu_b, 1)[None, :], -jnp.inf)
    return target, margin, sev


@full_precision
def hull_table(
    codes: Float[ArrayLike, "n_samples width"],
    atoms: Float[ArrayLike, "width n_features"],
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    fit_bias: bool = True,
    top: int = 32,
    chunk_rows: int = 8192,
    block: int | None = None,
    violated_only: float | None = None,
) -> HullTable | HullPairs:
    """The hull condition for all K² ordered pairs, in O(NK + K²d + KTk) time and O(chunk·K +
    K·T·k) memory beside the result (k: the largest support of a row).

    ``codes`` may be a JAX/numpy array, a memmap, ``SparseCodes`` or a ``CodeStore`` (read in
    ``chunk_rows`` row chunks); codes must be ≥ 0 and atoms unit rows (``check_optimality``
    validates both). Rows with zero weight are ignored. Returns the K × K ``HullTable``, or with
    ``violated_only=tol`` the ``HullPairs`` violated beyond tol (severity −margin/μ_j > tol) and
    per-atom counts: no K × K array is ever held. Columns j are read and judged ``block`` at a
    time (default: sized to about 2²¹ numbers of rows and 2²² of the table).
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
    if block is not None and not (isinstance(block, (int, np.integer)) and block >= 1):
        raise ValueError(f"`block` must be a positive number of columns, got {block!r}")
    if violated_only is not None and not (np.isfinite(violated_only) and violated_only >= 0):
        raise ValueError(f"`violated_only` must be a tolerance ≥ 0, got {violated_only!r}")
    dt = jnp.result_type(D.dtype, code_rows(codes, 0, 1).dtype)  # canonical (float32 without x64)
    n, k = codes.shape
    w = np.ones(n) if weights is None else np.asarray(weights)
    w = (w * (n / np.sum(w))).astype(dt)
    n_pos = int(np.sum(w > 0))  # rows of zero weight are masked in every kernel, never copied
    top = int(min(top, n))
    rows = int(min(chunk_rows, n, max(64, (1 << 23) // k)))  # dense chunks of ≤ 2²³ codes

    # pass 1: supports, masses, top activations
    state = (
        np.zeros((k,), np.int32),
        np.zeros((k,), dt),
        np.full((k, top), -1, dt),
        np.zeros((k, top), np.int32),
    )  # numpy: jnp.zeros compiles a program per shape
    if hasattr(codes, "sparse_rows"):  # sparse codes: O(nnz) per chunk, never densified
        for s in range(0, n, chunk_rows):
            ind, val = codes.sparse_rows(slice(s, s + chunk_rows))
            state = _scan_sparse(state, ind, val, w, s, top)
    else:
        for s, zc, wc in row_chunks(codes, w, rows):
            check_code_chunk(zc, s)
            state = _scan_chunk(state, zc.astype(dt), wc, jnp.int32(s), top)
    count, mass, tv, ti = state
    mu = np.asarray(mass) / n
    count_np, tv_np = np.asarray(count), np.asarray(tv)
    dense = count_np * 2 >= n_pos
    limit = np.minimum(count_np, top)  # j's top slots that are active points

    # top activations decide hi for pairs of sparse features: hi_ij = z_j at the first of j's top
    # points where z_i = 0; only the features i active at j's top point differ from tv[j, 0]
    base = np.where(limit > 0, tv_np[:, 0], 0).astype(dt)
    oi, oj, depth = _depths(codes, np.asarray(ti), limit, top, block)
    ohi = np.where(depth < limit[oj], tv_np[oj, np.minimum(depth, top - 1)], 0).astype(dt)
    unresolved = (depth >= top) & (count_np[oj] > top) & ~dense[oi] & ~dense[oj] & (oi != oj)
    pi, pj = oi[unresolved], oj[unresolved]

    # exact pass for what the shortcuts leave open: pairs touching a dense feature, unresolved pairs
    dense_idx = np.flatnonzero(dense).astype(np.int32)
    h, u = len(dense_idx), len(pi)
    exact = None
    if h or u:
        inf = np.inf
        acc = (  # numpy: jnp.full compiles a program per shape
            np.full((h, k), inf, dt),
            np.full((h, k), -inf, dt),
            np.full((h, k), inf, dt),
            np.full((h, k), -inf, dt),
            np.full((u,), inf, dt),
            np.full((u,), -inf, dt),
        )
        di, ai, aj = (to_device(a, np.int32) for a in (dense_idx, pi, pj))
        for _, zc, wc in row_chunks(codes, w, rows):
            acc = _exact_chunk(acc, zc.astype(dt), wc, di, ai, aj)
        exact = tuple(np.asarray(a) for a in acc)
    n_exact = int(h * 2 * k + u)

    def bounds(j0: int, j1: int):
        """(lo, hi) of columns [j0, j1): K × (j1 − j0)."""
        lo = np.zeros((k, j1 - j0), dt)
        hi = np.broadcast_to(base[j0:j1], (k, j1 - j0)).copy()
        sel = (oj >= j0) & (oj < j1)
        hi[oi[sel], oj[sel] - j0] = ohi[sel]
        if exact is not None:
            rlo, rhi, clo, chi, plo, phi = exact
            sel = (pj >= j0) & (pj < j1)
            lo[pi[sel], pj[sel] - j0], hi[pi[sel], pj[sel] - j0] = plo[sel], phi[sel]
            sel = (dense_idx >= j0) & (dense_idx < j1)
            lo[:, dense_idx[sel] - j0], hi[:, dense_idx[sel] - j0] = clo[sel].T, chi[sel].T
            lo[dense_idx, :], hi[dense_idx, :] = rlo[:, j0:j1], rhi[:, j0:j1]
        return lo, hi

    if violated_only is None:
        lo, hi = bounds(0, k)
        lo, hi, mu_j = jax.device_put((lo, hi, mu.astype(dt)))
        target, margin = _target_and_margin(D, mu_j, lo, hi, fit_bias)
        return HullTable(lo, hi, target, margin, mu_j, count, n_exact)

    cols = min(k, block or int(max(1, (1 << 22) // k)))
    D_host = np.asarray(D, dt)
    pad = -k % cols  # every block has one shape: padded columns have μ = 0 (not relevant)
    Dj, Dp, mup = jax.device_put(
        (D_host, np.pad(D_host, ((0, pad), (0, 0))), np.pad(mu, (0, pad)).astype(dt))
    )
    found, n_out, n_in = [], np.zeros(k, np.int64), np.zeros(k, np.int64)
    for j0 in range(0, k, cols):
        j1 = min(k, j0 + cols)
        lo, hi = bounds(j0, j1)
        if j1 - j0 < cols:
            lo, hi = (np.pad(a, ((0, 0), (0, cols - (j1 - j0)))) for a in (lo, hi))
        target, margin, sev = (
            np.asarray(a) for a in _block_severity(Dj, Dp, mup, lo, hi, j0, cols, fit_bias)
        )
        bi, bj = np.nonzero(sev > violated_only)
        n_out += np.bincount(bi, minlength=k)
        n_in[j0:j1] += np.bincount(bj, minlength=j1 - j0)
        found.append(
            (bi, bj + j0, lo[bi, bj], hi[bi, bj], target[bi, bj], margin[bi, bj], sev[bi, bj])
        )
    pi_, pj_, plo_, phi_, pt_, pm_, ps_ = (np.concatenate(f) for f in zip(*found, strict=True))
    order = np.argsort(-ps_, kind="stable")
    return HullPairs(
        np.stack([pi_, pj_], 1)[order].astype(np.int64).reshape(-1, 2),
        plo_[order], phi_[order], pt_[order], pm_[order], ps_[order],
        mu, count_np, n_out, n_in, float(violated_only), n_exact,
    )  # fmt: skip


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
