"""λ paths in groups: one data pass serves the biases of several λ at once (SPEC §2 for many λ).

For the biases b_j of a group, each block of rows is centred once at a reference, the group's first
bias b_r: y = x − b_r and ||x − b_j||² = ||y||² − 2⟨y, δ_j⟩ + ||δ_j||² with δ_j = b_j − b_r, one
(rows × m) product; G_j = Σ w a_j (y − δ_j)/λ_j and Y_j come from one (m × rows) product with y.
While every ||δ_j|| ≤ λ_j/4, the rounding error of ||x − b_j||² stays within a small multiple of
eps·(||x − b_j||² + λ_j²), as in the direct pass; otherwise (and with nonnegative atoms) each bias
gets its own direct pass. Groups are solved in decreasing λ, each started at the last bias of the
group before, and a group's biases are updated together until every one is certified.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ._wide_pass import data_pass, huber_weight, map_reduce_rows
from ._wide_solution import WideSolution
from ._wide_solver import WideSolver

GROUP = 8
_REF_RADIUS = 0.25


def _shared_block(xb, wb, B, lams):
    """(q (m, rows)), (G (m, d), Y (m, d)) for the biases B of one group, from one centring."""
    delta = B - B[0]
    y = xb - B[0]
    d2 = jnp.sum(y * y, axis=1)[:, None] - 2 * (y @ delta.T) + jnp.sum(delta * delta, axis=1)
    q = jnp.sqrt(jnp.maximum(d2, 0)) / lams
    a = wb[:, None] * huber_weight(q)
    G = (a.T @ y - jnp.sum(a, axis=0)[:, None] * delta) / lams[:, None]
    Y = ((wb @ y) - jnp.sum(wb) * delta) / lams[:, None]
    return (q.T,), (G, Y)


def group_stats(X, w, B, lams, nonneg: bool, chunked: bool = True):
    """Pass statistics (n1, q, G, Y), each with a leading group axis, at the biases B (m, d)."""

    def exact():
        return jax.vmap(lambda b, lam: data_pass(X, w, b, lam, nonneg, chunked))(B, lams)

    if nonneg:
        return exact()

    def shared():
        (q,), (G, Y) = map_reduce_rows(lambda xb, wb: _shared_block(xb, wb, B, lams), X, w, chunked)
        return jnp.zeros_like(q), q, G, Y

    near = jnp.all(jnp.linalg.norm(B - B[0], axis=1) <= _REF_RADIUS * lams)
    return lax.cond(near, shared, exact)


def solve_group(solver: WideSolver, X, w, lams, b0) -> WideSolution:
    """All λ of ``lams`` (m,) from the bias b0, updated together until each is certified."""
    m = lams.shape[0]
    B = jnp.broadcast_to(jnp.zeros_like(b0) if not solver.bias else b0, (m, b0.shape[0]))
    stats = group_stats(X, w, B, lams, solver.nonneg_atoms)
    steps = jnp.zeros((m,), jnp.int32)

    def todo(stats):
        return jax.vmap(solver.unfinished, in_axes=(0, 0, None, 0, 0))(*stats[:2], w, *stats[2:])

    def cond(state):
        _, stats, steps = state
        return jnp.any(todo(stats) & (steps < solver.max_steps))

    def body(state):
        B, stats, steps = state
        move = todo(stats) & (steps < solver.max_steps)
        n1, q, G, Y = stats
        Bn = jax.vmap(solver.step_bias, in_axes=(0, 0, 0, None, 0))(B, lams, q, w, G)
        B = jnp.where(move[:, None], Bn, B)
        return B, group_stats(X, w, B, lams, solver.nonneg_atoms), steps + move

    if solver.bias:
        B, stats, steps = lax.while_loop(cond, body, (B, stats, steps))
    n1, q, G, Y = stats
    return jax.vmap(solver.finish, in_axes=(0, 0, 0, 0, None, 0, 0, 0))(B, lams, n1, q, w, G, Y, steps)


@eqx.filter_jit
def solve_path_grouped(solver: WideSolver, X, w, lams, b0) -> WideSolution:
    """``lams`` in decreasing order, a multiple of GROUP long: groups under ``lax.scan``."""

    def f(b, lg):
        sols = solve_group(solver, X, w, lg, b)
        return sols.bias[-1], sols

    _, sols = lax.scan(f, b0, lams.reshape(-1, GROUP))
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]) if getattr(a, "ndim", 0) > 1 else a, sols)
