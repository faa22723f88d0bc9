"""The certified duality gap of the wide-limit problem at a given bias (SPEC §2).

Primal, in λ units: P = (1/Σw) Σ_n w_n f(ŷ_n), f(y) = ½||[y]₋||²·[nonneg] + h(||y||), h the Huber
function (h(q) = q²/2 for q ≤ 1, q − ½ otherwise). Dual: max (1/Σw)[Σ⟨u_n, ŷ_n⟩ − ½Σ||u_n||²/w_n]
over ||u_n|| ≤ w_n (||[u_n]₊|| ≤ w_n with nonnegative atoms) and Σ u_n = 0.

Two feasible dual points are built from one data pass and the better one is kept:

* SPEC's point: u_n = s·w_n (r_n − ḡ), ḡ = Σ w r/Σ w, s = min(1, 1/(max ||r_n|| + ||ḡ||)). Its gap is
  first order in ||ḡ||.
* Slack point: u_n = w_n r_n outside S, w_n (r_n − δ) on S = {q_n ≤ 1 − t}, δ = Σ w r / Σ_S w,
  feasible when ||δ|| ≤ t. Its gap is exactly ½||Σ w r||² / (Σ_S w · Σ w): second order.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._wide_pass import huber_weight

_SLACK_LEVELS = 24


def pointwise_objective(n1, q):
    """f = ½ n1 + h(q) in λ units."""
    return 0.5 * n1 + jnp.where(q <= 1, 0.5 * q * q, q - 0.5)


def certificate(n1, q, w, G, Y, bias: bool):
    """Return (primal, gap) in λ units (multiply by λ² for the objective's units)."""
    n_eff = jnp.sum(w)
    a = huber_weight(q)
    f = pointwise_objective(n1, q)
    primal = jnp.sum(w * f) / n_eff
    ry = n1 + a * q * q
    rr = n1 + a * a * q * q
    rnorm = jnp.where(w > 0, a * q, 0)
    if bias:
        gbar = G / n_eff
        gnorm = jnp.linalg.norm(gbar)
    else:
        gbar = jnp.zeros_like(G)
        gnorm = jnp.zeros((), q.dtype)
    s = jnp.minimum(1, 1 / jnp.maximum(jnp.max(rnorm) + gnorm, jnp.finfo(q.dtype).tiny))
    gap_b = jnp.sum(w * (1 - s) * (ry - 0.5 * (1 + s) * rr)) / n_eff
    gap_b = gap_b + (s * jnp.dot(gbar, Y) - 0.5 * s * s * n_eff * gnorm**2) / n_eff
    gap_b = jnp.maximum(gap_b, 0)
    if not bias:
        return primal, gap_b
    t = 2.0 ** -jnp.arange(1, _SLACK_LEVELS + 1, dtype=q.dtype)
    w_s = slack_weights(q, w, t)
    gsq = jnp.sum(G * G)
    feasible = (w_s > 0) & (jnp.sqrt(gsq) <= t * w_s)
    gap_a = jnp.where(feasible, 0.5 * gsq / (jnp.where(w_s > 0, w_s, 1) * n_eff), jnp.inf)
    return primal, jnp.minimum(gap_b, jnp.min(gap_a))


def slack_weights(q, w, t):
    """w_s[i] = Σ_n w_n [q_n ≤ 1 − t_i] (w_n > 0) for decreasing t, in O(N): the levels a point
    meets are those from its first one on, so the sums are a cumulative histogram of first levels
    (found from log2 and checked with the comparison itself)."""
    levels = t.shape[0]

    def meets(i):
        return (i < levels) & (q <= 1 - t[jnp.clip(i, 0, levels - 1)])

    gap = jnp.where(q < 1, 1 - q, 1)
    guess = jnp.clip(jnp.ceil(-jnp.log2(gap)) - 1, 0, levels).astype(jnp.int32)
    first = jnp.where(
        (guess > 0) & meets(guess - 1), guess - 1, jnp.where(meets(guess), guess, guess + 1)
    )
    first = jnp.where(q < 1, jnp.minimum(first, levels), levels)
    hist = jnp.zeros(levels + 1, w.dtype).at[first].add(jnp.where(w > 0, w, 0))
    return jnp.cumsum(hist)[:levels]


def relative(gap, primal):
    tiny = jnp.finfo(jnp.result_type(primal)).tiny
    return jnp.where(gap > 0, gap / jnp.maximum(jnp.abs(primal), tiny), 0 * gap)
