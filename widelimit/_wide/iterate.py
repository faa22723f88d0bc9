"""The one loop of every wide solve (in memory, λ paths, streamed): bias updates until certified.

State: the bias b (or a batch of biases, one per λ) with its pass statistics (q, sums, G, Y) and a
step count. While any element is unfinished (certified gap > rtol, objective finite, steps <
max_steps), the unfinished ones take ``WideSolver.step`` and a new pass. ``loop`` is
``lax.while_loop`` for compiled solves and ``host_while_loop`` for the streamed one, whose passes
read files on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .certificate import PointSums


class WideState(NamedTuple):
    """A bias (or biases, leading λ axis) and the statistics of its last pass (q is a host array
    in the streamed solve, whose loop runs on the host)."""

    bias: Array
    q: Array
    sums: PointSums
    G: Array
    Y: Array
    steps: Array


def host_while_loop(cond, body, state):
    """``lax.while_loop``'s contract, run eagerly (for passes that stream from the host)."""
    while bool(cond(state)):
        state = body(state)
    return state


def iterate(
    solver,
    stats: Callable,
    b0,
    lam,
    *,
    first=None,
    batched: bool = False,
    loop: Callable = lax.while_loop,
) -> WideState:
    """Run ``solver`` from ``b0`` to its stopping rule. ``stats(b)`` returns (q, sums, G, Y) of a
    pass at b; ``first`` is that of b0 when already known. ``batched``: b0 (m, d), lam (m,)."""
    each = jax.vmap if batched else (lambda f: f)
    steps = jnp.zeros(lam.shape, jnp.int32)
    # b0's pass as the loop's first iteration (no step) when the loop would compute it anyway: the
    # program then holds one copy of the pass, not two (a third less to compile)
    in_loop = solver.fit_bias and first is None and loop is lax.while_loop
    if not in_loop:
        q, sums, G, Y = stats(b0) if first is None else first
        state = WideState(b0, q, sums, G, Y, steps)
        if not solver.fit_bias:
            return state

    def todo(s: WideState):
        return each(solver.unfinished)(s.sums, s.G, s.Y) & (s.steps < solver.max_steps)

    def body(carry):
        s, move, _ = carry
        b = jnp.where(move[..., None], each(solver.step)(s.bias, lam, s.sums, s.G), s.bias)
        q, sums, G, Y = stats(b)
        s = WideState(b, q, sums, G, Y, s.steps + move)
        return s, todo(s), jnp.asarray(True)

    if in_loop:  # placeholders for b0's pass, which the first iteration computes
        shapes = jax.eval_shape(stats, b0)
        q, sums, G, Y = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        carry = (
            WideState(b0, q, sums, G, Y, steps),
            jnp.zeros(lam.shape, bool),
            jnp.asarray(False),
        )
    else:
        carry = (state, todo(state), jnp.asarray(True))
    state, _, _ = loop(lambda c: jnp.any(c[1]) | ~c[2], body, carry)
    return state
