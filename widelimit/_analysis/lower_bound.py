"""Certified lower bounds on any finite dictionary's loss from the wide-limit dual (SPEC §2)."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core.objective import (
    check_dictionary,
    densify,
    is_out_of_core,
    loss_from_sums,
    loss_terms,
    relative_gap,
    residuals,
    streamed_dictionary,
    streamed_sums_of,
)
from .._core.paired_blocks import streamed_max_centred
from .._core.precision import full_precision
from .._core.validate import check_lam, check_weights
from .._wide.solution import WideSolution


class LowerBound(eqx.Module):
    """A finite dictionary's loss against the wide limit.

    Attributes:
        loss: L(D, Z, b) of the finite dictionary.
        residual_bound: dual value of the feasible point built from the dictionary's own
            residuals (no solve needed); ≤ W(λ) ≤ loss.
        wide_bound: dual value of the wide solve when one was given (the tight bound), else NaN.
        lower_bound: the best certified bound available (max of the two).
        gap: (loss − lower_bound)/|lower_bound| ≥ 0, the certified relative gap.
        gap_abs: loss − lower_bound ≥ 0.
    """

    loss: Float[Array, ""]
    residual_bound: Float[Array, ""]
    wide_bound: Float[Array, ""]
    lower_bound: Float[Array, ""]
    gap: Float[Array, ""]
    gap_abs: Float[Array, ""]


@functools.partial(jax.jit, static_argnames="bias")
def residual_dual_bound(X, R, w, lam, bias: bool):
    """Dual value of u_n = s·w_n(r_n − r̄), r̄ the weighted mean (no centring without bias),
    s = min(1, λ/max_n ||r_n − r̄||): (1/N)[Σ⟨u_n, x_n⟩ − ½ Σ||u_n||²/w_n] ≤ W(λ)."""
    n = jnp.sum(w)
    if bias:
        R = R - (w @ R) / n
    norms = jnp.where(w > 0, jnp.linalg.norm(R, axis=1), 0)
    s = jnp.minimum(1, lam / jnp.maximum(jnp.max(norms), jnp.finfo(R.dtype).tiny))
    # with Σ u_n = 0 the value is translation invariant; centre x for accuracy
    Xc = X - (w @ X) / n if bias else X
    lin = s * jnp.sum(w * jnp.sum(R * Xc, axis=1))
    quad = 0.5 * s * s * jnp.sum(w * norms**2)
    return (lin - quad) / n


def _streamed_bound(X, atoms, codes, bias, lam, weights):
    """(loss, residual dual bound, dtype) block by block: ``residual_dual_bound``'s sums expanded
    around the weighted means, r̄ = Σwr/N and x̄ = Σwx/N (a second pass finds max ||r_n − r̄||)."""
    store, D, codes, b = streamed_dictionary(X, atoms, codes, bias)
    lam = check_lam(lam, D.dtype)
    s, _ = streamed_sums_of(store, D, codes, b, lam, weights)
    n, lam_f = s.n, float(lam)
    loss = loss_from_sums(s, lam)
    if bias is not None:
        rbar, xbar = s.wr / n, s.wx / n
        lin = s.wrx - n * float(rbar @ xbar)
        quad = s.wrr - n * float(rbar @ rbar)
        top = streamed_max_centred(store, D, codes, b, jnp.asarray(rbar, D.dtype), weights=weights)
    else:
        lin, quad, top = s.wrx, s.wrr, float(s.rmax)
    scale = min(1.0, lam_f / max(top, float(jnp.finfo(D.dtype).tiny)))
    rb = (scale * lin - 0.5 * scale * scale * quad) / n
    return jnp.asarray(loss, D.dtype), jnp.asarray(rb, D.dtype), D.dtype


@full_precision
def wide_lower_bound(
    X: Float[ArrayLike, "n_samples n_features"],
    lam: float,
    atoms: Float[ArrayLike, "width n_features"],
    codes: Float[ArrayLike, "n_samples width"],
    bias: Float[ArrayLike, " n_features"] | None,
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    wide: WideSolution | None = None,
) -> LowerBound:
    """Certify a finite dictionary against the wide limit without solving anything.

    Every unit-atom dictionary has L ≥ W(λ) ≥ dual value of any feasible U. With ``wide`` (a
    ``WideSolution`` for the same X, λ, weights) the tight bound ``wide.dual_objective`` is used
    for the gap; the residual-based bound is always reported too. ``bias=None`` means no bias.
    X may be an ``ActivationStore`` and codes ``SparseCodes`` or a ``CodeStore`` (two passes
    over the rows, O(block × width) memory).
    """
    has_bias = bias is not None
    if is_out_of_core(X, codes):
        loss, rb, dt = _streamed_bound(X, atoms, codes, bias, lam, weights)
    else:
        X, atoms, codes, b = check_dictionary(X, atoms, densify(codes), bias)
        lam = check_lam(lam, X.dtype)
        w = check_weights(weights, X.shape[0], X.dtype)
        rec, sparse = loss_terms(X, atoms, codes, b, lam, w)
        loss = rec + sparse
        rb = residual_dual_bound(X, residuals(X, atoms, codes, b), w, lam, has_bias)
        dt = X.dtype
    wb = jnp.asarray(jnp.nan, dt) if wide is None else jnp.asarray(wide.dual_objective, dt)
    lb = rb if wide is None else jnp.maximum(rb, wb)
    ok = jnp.isfinite(loss) & jnp.isfinite(rb)
    if not isinstance(ok, jax.core.Tracer) and not bool(ok):
        raise RuntimeError(
            f"the loss ({float(loss):.3g}) or its bound ({float(rb):.3g}) is outside the range of "
            f"the dtype {dt}: rescale X (and λ), or use float64"
        )
    gap_abs = loss - lb
    return LowerBound(loss, rb, wb, lb, relative_gap(gap_abs, lb), gap_abs)
