"""One pass over the data at a fixed bias b: the only O(N·d) work of the wide-limit solve.

Everything is in λ units, ŷ_n = (x_n − b)/λ, so the computation is scale free. Per point it returns
``q_n = ||ŷ_n||`` (``||[ŷ_n]₊||`` with nonnegative atoms) and ``n1_n = ||[ŷ_n]₋||²`` (0 otherwise);
summed over points it returns ``G = Σ w_n r̂_n`` (the residual sum, r̂ = ψ(ŷ)) and ``Y = Σ w_n ŷ_n``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

# Blocks of about this many elements keep the fused distance + reduction in cache (XLA:CPU slows
# down ~3x when it fuses both over one array of >100 MB).
_BLOCK_ELEMENTS = 2**21


def huber_weight(q):
    """a = min(1, 1/q) (in λ units), safe at q = 0."""
    return jnp.where(q > 1, 1 / jnp.where(q > 1, q, 1), jnp.ones_like(q))


def block_stats(xb, wb, b, lam, nonneg: bool):
    """Statistics of one block of rows: (n1, q, G, Y)."""
    y = (xb - b) / lam
    if nonneg:
        p = jnp.maximum(y, 0)
        yneg = jnp.minimum(y, 0)
        q = jnp.sqrt(jnp.sum(p * p, axis=1))
        n1 = jnp.sum(yneg * yneg, axis=1)
        r = huber_weight(q)[:, None] * p + yneg
        G = wb @ r
        Y = wb @ y
    else:
        q = jnp.sqrt(jnp.sum(y * y, axis=1))
        n1 = jnp.zeros_like(q)
        GY = jnp.stack([wb * huber_weight(q), wb]) @ y
        G, Y = GY[0], GY[1]
    return n1, q, G, Y


def block_rows(n_features: int) -> int:
    return max(64, _BLOCK_ELEMENTS // max(n_features, 1))


def map_reduce_rows(f, X, w, chunked: bool):
    """``f(xb, wb) -> (per_row, sums)`` over all rows, in cache-sized blocks when ``chunked``: the
    per-row outputs (rows on their last axis) are concatenated and the sums added."""
    n, d = X.shape
    B = block_rows(d)
    if not chunked or n <= 2 * B:
        return f(X, w)
    nb, rem = divmod(n, B)
    shapes = jax.eval_shape(f, X[:B], w[:B])

    def body(i, carry):
        rows, sums = carry
        rows_b, sums_b = f(
            lax.dynamic_slice_in_dim(X, i * B, B), lax.dynamic_slice_in_dim(w, i * B, B)
        )
        rows = jax.tree.map(
            lambda a, ab: lax.dynamic_update_slice_in_dim(a, ab, i * B, -1), rows, rows_b
        )
        return rows, jax.tree.map(jnp.add, sums, sums_b)

    init = (
        jax.tree.map(lambda s: jnp.zeros((*s.shape[:-1], n), s.dtype), shapes[0]),
        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1]),
    )
    rows, sums = lax.fori_loop(0, nb, body, init)
    if rem:
        rows_r, sums_r = f(X[nb * B :], w[nb * B :])
        rows = jax.tree.map(lambda a, ar: a.at[..., nb * B :].set(ar), rows, rows_r)
        sums = jax.tree.map(jnp.add, sums, sums_r)
    return rows, sums


def data_pass(X, w, b, lam, nonneg: bool, chunked: bool):
    """``block_stats`` over all rows; in cache-sized blocks when ``chunked``."""

    def f(xb, wb):
        n1, q, G, Y = block_stats(xb, wb, b, lam, nonneg)
        return (n1, q), (G, Y)

    (n1, q), (G, Y) = map_reduce_rows(f, X, w, chunked)
    return n1, q, G, Y


# Rows per batch of ``weighted_row_sum``: a divisor of N in this range, the nearest to 256 in ratio
# (measured at N = 2^20, d = 768 on XLA:CPU: batches of 128–512 rows run at the speed of ``X @ v``,
# 64 or 1024 at 1.2x, one ``c @ X`` at ~1.9x).
_SUM_ROWS = (64, 2048)

# Fast passes sum raw rows, G = (Σ c x − b Σ c)/λ, whose rounding grows with ||x||/||x − b||;
# above this ratio of ||b|| to the RMS distance they fall back to passes that form x − b.
_MAX_OFFSET = 16.0


def sum_rows_batch(n: int) -> int | None:
    """The batch size of ``weighted_row_sum`` for n rows (None: no divisor in ``_SUM_ROWS``)."""
    lo, hi = _SUM_ROWS
    sizes = [B for B in range(lo, min(hi, n // 4) + 1) if n % B == 0]
    return min(sizes, key=lambda B: abs(math.log(B / 256)), default=None)


def weighted_row_sum(c, X):
    """Σ_n c_n x_n (c of shape (N,) or (N, m) → (d,) or (m, d)), as a batch of (B × d) products
    when N has a divisor B in ``_SUM_ROWS`` (the reshape is free; slicing off a remainder would copy
    X), else as one product."""
    n, d = X.shape
    B = sum_rows_batch(n)
    if B is None:
        return c.T @ X
    k = n // B
    cb = c.reshape(k, B, -1)
    out = jnp.einsum("knm,knd->kmd", cb, X.reshape(k, B, d)).sum(0)
    return out[0] if c.ndim == 1 else out


def _root(s):
    """Identity that keeps a row reduction the root of its fusion: XLA:CPU runs
    ``sum((X − b)², 1)`` at the speed of ``X @ v`` but ~5x slower with ``sqrt`` fused after it."""
    info = jnp.finfo(s.dtype)
    return lax.reduce_precision(s, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def squared_distances(X, b):
    """s_n = ||x_n − b||², at the speed of ``X @ v`` (λ is applied afterwards: ~1.3x faster)."""
    return _root(jnp.sum(jnp.square(X - b), axis=1))


def raw_sums_ok(b, s, w, lam_min):
    """Whether sums of raw rows (``centred_row_sums``) are as accurate as sums of x − b, up to a
    factor ``_MAX_OFFSET``: ||b|| ≤ ``_MAX_OFFSET`` × the RMS distance √(Σ w s/Σ w), and the squared
    distances s neither overflowed nor underflow at the scale of λ (the direct pass works in λ
    units)."""
    rms = jnp.sqrt(jnp.sum(w * s) / jnp.sum(w))
    tiny = jnp.finfo(s.dtype).tiny
    return (
        (jnp.linalg.norm(b) <= _MAX_OFFSET * rms) & jnp.isfinite(rms) & (lam_min**2 > tiny * 2**24)
    )


def centred_row_sums(c, X, B, lams):
    """G_j = Σ_n c_nj (x_n − b_j)/λ_j = (Σ c_nj x_n − b_j Σ c_nj)/λ_j for c (N, m), biases B (m, d)."""
    return (weighted_row_sum(c, X) - jnp.sum(c, axis=0)[:, None] * B) / lams[:, None]


def fast_pass(X, w, b, lam, wx):
    """``data_pass`` (no nonnegative atoms) from two reads of X that each run near ``X @ v`` speed:
    s = ``squared_distances`` (q = √s/λ), then G from ``centred_row_sums`` with c = w·a(q) and
    Y = (wx − b Σ w)/λ from ``wx = Σ w_n x_n``. Falls back to ``data_pass`` where not
    ``raw_sums_ok``."""
    s = squared_distances(X, b)
    q = jnp.sqrt(s) / lam

    def raw(_):
        c = (w * huber_weight(q))[:, None]
        G = centred_row_sums(c, X, b[None], lam[None])[0]
        return jnp.zeros_like(q), q, G, (wx - b * jnp.sum(w)) / lam

    direct = lambda _: data_pass(X, w, b, lam, False, True)  # noqa: E731
    return lax.cond(raw_sums_ok(b, s, w, lam), raw, direct, None)


def is_sharded(X) -> bool:
    sh = getattr(X, "sharding", None)
    return sh is not None and not isinstance(X, jax.core.Tracer) and len(sh.device_set) > 1
