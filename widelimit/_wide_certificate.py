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

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._wide_pass import huber_weight

_SLACK_LEVELS = 24


def pointwise_objective(n1, q):
    """f = ½ n1 + h(q) in λ units."""
    return 0.5 * n1 + jnp.where(q <= 1, 0.5 * q * q, q - 0.5)


class PointSums(NamedTuple):
    """The per-point part of the certificate, additive over blocks of rows (``rmax`` by maximum):
    Σw, Σw f, Σw ry, Σw rr, Σw a (the IRLS curvature), max ||r̂_n|| and the histogram of the first
    slack level each point meets (``slack_weights``)."""

    n_eff: Array
    wf: Array
    wry: Array
    wrr: Array
    wa: Array
    rmax: Array
    hist: Array


def point_sums(n1, q, w) -> PointSums:
    """``PointSums`` of one block of points (ry = ⟨r̂, ŷ⟩ = n1 + a q², rr = ||r̂||² = n1 + a² q²)."""
    a = huber_weight(q)
    rnorm = jnp.where(w > 0, a * q, 0)
    return PointSums(
        jnp.sum(w),
        jnp.sum(w * pointwise_objective(n1, q)),
        jnp.sum(w * (n1 + a * q * q)),
        jnp.sum(w * (n1 + a * a * q * q)),
        jnp.sum(w * a),
        jnp.max(rnorm, initial=0),
        _level_histogram(q, w),
    )


def add_sums(s: PointSums, t: PointSums) -> PointSums:
    """The sums of two blocks of points together (numpy, for accumulating on the host)."""
    total = PointSums(*(a + b for a, b in zip(s, t, strict=True)))
    return total._replace(rmax=np.maximum(s.rmax, t.rmax))


def certificate(n1, q, w, G, Y, bias: bool):
    """Return (primal, gap) in λ units (multiply by λ² for the objective's units)."""
    return certificate_from_sums(point_sums(n1, q, w), G, Y, bias)


def certificate_from_sums(s: PointSums, G, Y, bias: bool):
    """(primal, gap) from the per-point sums and the pass's G = Σ w r̂ and Y = Σ w ŷ."""
    n_eff = s.n_eff
    primal = s.wf / n_eff
    dt = jnp.result_type(primal)
    if bias:
        gbar = G / n_eff
        gnorm = jnp.linalg.norm(gbar)
    else:
        gbar = jnp.zeros_like(G)
        gnorm = jnp.zeros((), dt)
    sc = jnp.minimum(1, 1 / jnp.maximum(s.rmax + gnorm, jnp.finfo(dt).tiny))
    gap_b = ((1 - sc) * s.wry - 0.5 * (1 - sc) * (1 + sc) * s.wrr) / n_eff
    gap_b = gap_b + (sc * jnp.dot(gbar, Y) - 0.5 * sc * sc * n_eff * gnorm**2) / n_eff
    gap_b = jnp.maximum(gap_b, 0)
    if not bias:
        return primal, gap_b
    t = 2.0 ** -jnp.arange(1, _SLACK_LEVELS + 1, dtype=dt)
    w_s = jnp.cumsum(s.hist)[:_SLACK_LEVELS]
    gsq = jnp.sum(G * G)
    feasible = (w_s > 0) & (jnp.sqrt(gsq) <= t * w_s)
    gap_a = jnp.where(feasible, 0.5 * gsq / (jnp.where(w_s > 0, w_s, 1) * n_eff), jnp.inf)
    return primal, jnp.minimum(gap_b, jnp.min(gap_a))


def _level_histogram(q, w):
    """hist[i] = Σ_n w_n [the first slack level point n meets is i] (w_n > 0; i = levels: none), for
    the levels t_i = 2^-(i+1): the levels a point meets are those from its first one on (found from
    log2 and checked with the comparison itself), so their weights are a cumulative sum of hist."""
    levels = _SLACK_LEVELS
    t = 2.0 ** -jnp.arange(1, levels + 1, dtype=q.dtype)

    def meets(i):
        return (i < levels) & (q <= 1 - t[jnp.clip(i, 0, levels - 1)])

    gap = jnp.where(q < 1, 1 - q, 1)
    guess = jnp.clip(jnp.ceil(-jnp.log2(gap)) - 1, 0, levels).astype(jnp.int32)
    first = jnp.where(
        (guess > 0) & meets(guess - 1), guess - 1, jnp.where(meets(guess), guess, guess + 1)
    )
    first = jnp.where(q < 1, jnp.minimum(first, levels), levels)
    return jnp.zeros(levels + 1, w.dtype).at[first].add(jnp.where(w > 0, w, 0))


def slack_weights(q, w):
    """w_s[i] = Σ_n w_n [q_n ≤ 1 − t_i] (w_n > 0) for the slack levels t_i = 2^-(i+1), in O(N)."""
    return jnp.cumsum(_level_histogram(q, w))[:_SLACK_LEVELS]


def relative(gap, primal):
    tiny = jnp.finfo(jnp.result_type(primal)).tiny
    return jnp.where(gap > 0, gap / jnp.maximum(jnp.abs(primal), tiny), 0 * gap)
