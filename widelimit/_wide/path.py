"""λ paths in groups: one data pass serves the biases of several λ at once (SPEC §2 for many λ).

For the biases b_j of a group, each block of rows is centred once at a reference, the group's first
bias b_r: y = x − b_r and ||x − b_j||² = ||y||² − 2⟨y, δ_j⟩ + ||δ_j||² with δ_j = b_j − b_r, one
(rows × m) product; G_j = Σ w a_j (y − δ_j)/λ_j and Y_j come from one (m × rows) product with y.
While every ||δ_j|| ≤ λ_j/4, the rounding error of ||x − b_j||² stays within a small multiple of
eps·(||x − b_j||² + λ_j²), as in the direct pass; otherwise each bias gets its own pass, centred at
itself (and with nonnegative atoms, the direct pass). Groups are solved in decreasing λ, each
started at the last bias b of the group before, and a group's biases are updated together until every
one is certified. A group's first pass reuses the distances of that group's last pass at b
(q_j = q·λ_last/λ_j), so it only forms G and Y; at small λ, where the bias no longer moves, that is
the whole cost of a group.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .data_pass import (
    centred_row_sums,
    data_pass,
    huber_weight,
    map_reduce_rows,
    raw_sums_ok,
    squared_distances,
    weighted_row_sum,
)
from .iterate import iterate
from .solution import WideSolution
from .solver import WideSolver

GROUP = 8
_REF_RADIUS = 0.25


def _shared_block(xb, wb, B, lams, ref):
    """(q (m, rows)), (G (m, d), Y (m, d)) for the biases B of one group, centred at B[ref]."""
    delta = B - B[ref]
    y = xb - B[ref]
    d2 = jnp.sum(y * y, axis=1)[:, None] - 2 * (y @ delta.T) + jnp.sum(delta * delta, axis=1)
    q = jnp.sqrt(jnp.maximum(d2, 0)) / lams
    a = wb[:, None] * huber_weight(q)
    G = (a.T @ y - jnp.sum(a, axis=0)[:, None] * delta) / lams[:, None]
    Y = ((wb @ y) - jnp.sum(wb) * delta) / lams[:, None]
    return (q.T,), (G, Y)


def _shared_pass(X, w, B, lams, ref, wx):
    """(q (m, N), G, Y) at the biases B, centred at B[ref]: ||x − b_j||² = s − 2⟨x − b_r, δ_j⟩ +
    ||δ_j||² with s = ``squared_distances`` to b_r, and G from ``centred_row_sums``; by blocks of
    x − b_r (``_shared_block``) where not ``raw_sums_ok``."""
    r = B[ref]
    delta = B - r
    s = squared_distances(X, r)

    def raw(_):
        d2 = s[:, None] - 2 * (X @ delta.T - r @ delta.T) + jnp.sum(delta * delta, axis=1)
        q = jnp.sqrt(jnp.maximum(d2, 0)) / lams
        a = w[:, None] * huber_weight(q)
        return q.T, centred_row_sums(a, X, B, lams), (wx - jnp.sum(w) * B) / lams[:, None]

    def direct(_):
        (q,), (G, Y) = map_reduce_rows(
            lambda xb, wb: _shared_block(xb, wb, B, lams, ref), X, w, True
        )
        return q, G, Y

    return lax.cond(raw_sums_ok(r, s, w, jnp.min(lams)), raw, direct, None)


def group_stats(X, w, B, lams, nonneg: bool, chunked: bool = True, wx=None):
    """Pass statistics (n1, q, G, Y), each with a leading group axis, at the biases B (m, d).

    One pass centred at B[0] when every bias lies within λ_j/4 of it; otherwise one pass per bias,
    each centred at that bias (which is the direct computation). A loop of one or m passes rather
    than ``lax.cond``, whose operand copies cost XLA:CPU about a third of a pass. With ``wx`` =
    Σ w x (unsharded data), each pass is a ``_shared_pass``."""
    if nonneg:
        return jax.vmap(lambda b, lam: data_pass(X, w, b, lam, True, chunked))(B, lams)
    m = B.shape[0]
    near = jnp.all(jnp.linalg.norm(B - B[0], axis=1) <= _REF_RADIUS * lams)

    def one_pass(j, acc):
        ref = jnp.where(near, 0, j)
        if wx is not None:
            new = _shared_pass(X, w, B, lams, ref, wx)
        else:
            (q,), (G, Y) = map_reduce_rows(
                lambda xb, wb: _shared_block(xb, wb, B, lams, ref), X, w, chunked
            )
            new = (q, G, Y)
        take = near | (jnp.arange(m) == j)
        return tuple(
            jnp.where(take.reshape(-1, *(1,) * (a.ndim - 1)), n, a)
            for a, n in zip(acc, new, strict=True)
        )

    n, d = X.shape
    dt = jnp.result_type(X.dtype, B.dtype)
    init = (jnp.zeros((m, n), dt), jnp.zeros((m, d), dt), jnp.zeros((m, d), dt))
    q, G, Y = lax.fori_loop(0, jnp.where(near, 1, m), one_pass, init)
    return jnp.zeros_like(q), q, G, Y


def _known_distance_block(xb, wq, b, lams, lam0):
    """(q (m, rows)), (G, Y) for biases all at b when q0 = ||x − b||/λ0 is known: q_j = q0·λ0/λ_j, so
    only the (m × rows) product with y = x − b is left (no distance reduction)."""
    wb, q0 = wq[:, 0], wq[:, 1]
    y = xb - b
    q = q0[None, :] * (lam0 / lams)[:, None]
    a = wb[None, :] * huber_weight(q)
    G = (a @ y) / lams[:, None]
    Y = (wb @ y)[None, :] / lams[:, None]
    return (q,), (G, Y)


def known_distance_stats(X, w, b, q0, lam0, lams, chunked: bool = True, wx=None):
    """Pass statistics (n1, q, G, Y) at the bias b for every λ of ``lams``, from the distances
    q0 = ||x − b||/λ0 of an earlier pass at the same b (atoms unrestricted). With ``wx`` = Σ w x,
    G comes from ``centred_row_sums`` where ``raw_sums_ok``."""
    wq = jnp.stack([w, q0.astype(w.dtype)], axis=1)

    def direct(_):
        (q,), (G, Y) = map_reduce_rows(
            lambda xb, wqb: _known_distance_block(xb, wqb, b, lams, lam0), X, wq, chunked
        )
        return q, G, Y

    if wx is None:
        q, G, Y = direct(None)
        return jnp.zeros_like(q), q, G, Y

    def raw(_):
        q = q0[None, :] * (lam0 / lams)[:, None]
        a = w[None, :] * huber_weight(q)
        B = jnp.broadcast_to(b, (lams.shape[0], b.shape[0]))
        return q, centred_row_sums(a.T, X, B, lams), (wx - jnp.sum(w) * B) / lams[:, None]

    s = jnp.square(q0 * lam0)
    q, G, Y = lax.cond(raw_sums_ok(b, s, w, jnp.min(lams)), raw, direct, None)
    return jnp.zeros_like(q), q, G, Y


def solve_group(solver: WideSolver, X, w, lams, b0, q0=None, lam0=None, wx=None):
    """All λ of ``lams`` (m,) from the bias b0, updated together (``iterate``, batched) until each
    is certified; returns (solutions, q of the last λ's final pass). With q0 = ||x − b0||/λ0 from
    an earlier pass the first statistics skip the distance computation."""
    m = lams.shape[0]
    B = jnp.broadcast_to(b0 if solver.fit_bias else jnp.zeros_like(b0), (m, b0.shape[0]))
    sums_of = jax.vmap(solver.sums, in_axes=(0, 0, None, 0))

    def with_sums(n1, q, G, Y):
        return q, sums_of(n1, q, w, G), G, Y

    def stats(B):
        return with_sums(*group_stats(X, w, B, lams, solver.nonneg_atoms, wx=wx))

    first = None
    if q0 is not None and not solver.nonneg_atoms:
        first = with_sums(*known_distance_stats(X, w, B[0], q0, lam0, lams, wx=wx))
    s = iterate(solver, stats, B, lams, first=first, batched=True)
    sols = jax.vmap(solver.finish)(s.bias, lams, s.q, s.sums, s.G, s.Y, s.steps)
    return sols, s.q[-1]


@eqx.filter_jit
def solve_path_grouped(solver: WideSolver, X, w, lams) -> WideSolution:
    """Every λ of ``lams`` (any order), solved in decreasing order (padded to a multiple of GROUP
    with the smallest) by ``solve_sorted_path``; the solutions are returned in the order of
    ``lams``. One compiled program: the sorting costs no separate dispatches."""
    order = jnp.argsort(-lams)
    pad = -lams.shape[0] % GROUP
    sols = solve_sorted_path(solver, X, w, lams[jnp.concatenate([order, jnp.full(pad, order[-1])])])
    inv = jnp.argsort(order)
    return jax.tree.map(lambda a: a[inv] if getattr(a, "ndim", 0) else a, sols)


def solve_sorted_path(solver: WideSolver, X, w, lams) -> WideSolution:
    """``lams`` in decreasing order, a multiple of GROUP long: groups under ``lax.scan``, the first
    started at the weighted mean, each later one at the last bias of the group before, whose final
    distances it reuses (a group whose biases stay put, as at small λ, then costs one (m × rows)
    product and no distance pass)."""
    groups = lams.reshape(-1, GROUP)
    wx = weighted_row_sum(w, X)
    first, q = solve_group(solver, X, w, groups[0], wx / jnp.sum(w), wx=wx)

    def f(carry, lg):
        b, q_last, lam_last = carry
        sols, q = solve_group(solver, X, w, lg, b, q_last, lam_last, wx)
        return (sols.bias[-1], q, lg[-1]), sols

    _, rest = lax.scan(f, (first.bias[-1], q, groups[0, -1]), groups[1:])
    sols = jax.tree.map(lambda a, r: jnp.concatenate([a[None], r]), first, rest)
    return jax.tree.map(
        lambda a: a.reshape(-1, *a.shape[2:]) if getattr(a, "ndim", 0) > 1 else a, sols
    )
