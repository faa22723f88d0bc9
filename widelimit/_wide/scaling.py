"""Solve on centred, power-of-two-scaled data, report in the caller's units.

W is equivariant: with X = c + sY (c the weighted mean when a bias is fitted, else 0; s a power of
two near the rms distance to c, so scaling is exact), W(X, λ) = s² W(Y, λ/s), b_X = c + s b_Y and
||m_n|| scales by s. The solve then never squares huge or tiny numbers, and offset float32 data
(X + 100) keeps its digits. A result whose W or bound does not fit the dtype is marked
``RESULTS.out_of_range``, never successful. λ beyond every point's distance is capped
(``effective_lam``): the answer is the same and λ² stays finite.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core.results import RESULTS
from .solution import WideSolution
from .solver import weighted_mean


@eqx.filter_jit  # one dispatch: small solves are dominated by per-op overhead
def standardise(X, w, bias: bool):
    """(Y, c, s, R): the data Y = (X − c)/s, the centre c (the weighted mean with a bias, else 0),
    a power-of-two scale s near the rms distance to c, and R = max_n ||y_n||."""
    d = X.shape[1]
    c = weighted_mean(X, w) if bias else jnp.zeros((d,), X.dtype)
    Yc = X - c
    # row norms of the max-normalised data, so that no square overflows or underflows
    big = jnp.max(jnp.abs(Yc))
    safe = jnp.where(big > 0, big, 1)
    u = jnp.linalg.norm(Yc / safe, axis=1)
    rms = safe * jnp.sqrt(jnp.sum(w * u**2) / jnp.sum(w))
    s = jnp.exp2(jnp.round(jnp.log2(jnp.where(rms > 0, rms, 1)))).astype(X.dtype)
    return Yc / s, c, s, safe * jnp.max(u) / s


@jax.jit
def effective_lam(R, lam_scaled):
    """λ/s, capped at 2R + 1 (scaled units, R = max_n ||y_n||): once every point lies within λ of
    the bias the solution (b = the weighted mean, M = 0) and both objectives no longer depend on
    λ, and the cap keeps λ² in range (solve_wide(X, 1e20) in float32)."""
    return jnp.minimum(lam_scaled, 2 * R + 1)


@eqx.filter_jit
def unstandardise(sol: WideSolution, c, s, lam) -> WideSolution:
    """``sol`` of (Y, λ/s) in the units of X; out-of-range objectives marked ``out_of_range``."""
    s2 = s * s
    obj, dual, abs_gap = sol.objective * s2, sol.dual_objective * s2, sol.abs_gap * s2
    bias = c + s * sol.bias
    tiny = jnp.finfo(obj.dtype).tiny
    finite = jnp.isfinite(obj) & jnp.isfinite(dual) & jnp.all(jnp.isfinite(bias), axis=-1)
    # XLA flushes subnormals to zero, so compare with the scaled objective, not with 0
    under = (sol.objective != 0) & (jnp.abs(obj) < tiny)
    bad = (sol.result == RESULTS.successful) & (~finite | under)
    mark = lambda b, r: RESULTS.where(b, RESULTS.out_of_range, r)  # noqa: E731
    result = jax.vmap(mark)(bad, sol.result) if bad.ndim else mark(bad, sol.result)
    return eqx.tree_at(
        lambda t: (t.bias, t.lam, t.objective, t.dual_objective, t.abs_gap, t.code_norms, t.result),
        sol,
        (bias, jnp.broadcast_to(jnp.asarray(lam, obj.dtype), sol.lam.shape), obj, dual, abs_gap,
         sol.code_norms * s, result),
    )  # fmt: skip


@eqx.filter_jit
def solve_standardised(solver, X, w, lam, b0=None) -> WideSolution:
    """``solver`` on the standardised data, reported in the units of X: one compiled program, so
    a small solve pays one dispatch, not one per step of the scaling."""
    Y, c, s, R = standardise(X, w, solver.fit_bias)
    b0 = None if b0 is None else (b0 - c) / s
    return unstandardise(solver(Y, w, effective_lam(R, lam / s), b0), c, s, lam)
