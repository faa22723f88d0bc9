"""The dictionary-learning objective L(D, Z, b) of SPEC §1."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .precision import full_precision
from .validate import check_lam, check_matrix, check_vector, check_weights


def relative_gap(gap_abs, bound):
    """The one meaning of a relative gap in widelimit: (L − W_low)/|W_low| = gap_abs/|bound|
    (0 when gap_abs is 0, also for a zero bound). A negative gap (a loss below its certified
    bound: rounding, or a bug) stays negative, and a NaN stays NaN, so neither can pass for a
    closed gap."""
    tiny = jnp.finfo(jnp.result_type(bound)).tiny
    return jnp.where(gap_abs == 0, 0 * gap_abs, gap_abs / jnp.maximum(jnp.abs(bound), tiny))


def check_dictionary(X, atoms, codes, bias, *, finite: bool = True):
    """Validate (X, atoms, codes, bias) shapes; returns JAX arrays in one float dtype."""
    X = check_matrix(X, "X", check_finite=finite)
    n, d = X.shape
    atoms = check_matrix(atoms, "atoms", check_finite=finite)
    if atoms.shape[1] != d:
        raise ValueError(f"`atoms` has {atoms.shape[1]} features but `X` has {d}")
    codes = check_matrix(codes, "codes", check_finite=finite)
    if codes.shape != (n, atoms.shape[0]):
        raise ValueError(
            f"`codes` must have shape (n_samples, width) = ({n}, {atoms.shape[0]}), got "
            f"{tuple(codes.shape)}"
        )
    if bias is None:
        bias = jnp.zeros((d,), X.dtype)
    elif finite:
        bias = check_vector(bias, d, X.dtype, "bias")
    else:
        bias = jnp.asarray(bias, X.dtype)
        if bias.shape != (d,):
            raise ValueError(f"`bias` must have shape ({d},), got {tuple(bias.shape)}")
    dt = jnp.result_type(X.dtype, atoms.dtype, codes.dtype)
    return X.astype(dt), atoms.astype(dt), codes.astype(dt), bias.astype(dt)


def residuals(X, atoms, codes, bias):
    """r_n = x_n − b − Dz_n, shape (n_samples, n_features)."""
    return X - bias - codes @ atoms


def loss_terms(X, atoms, codes, bias, lam, w):
    """(reconstruction, sparsity) parts of L; L is their sum."""
    n = jnp.sum(w)
    r = residuals(X, atoms, codes, bias)
    rec = 0.5 * jnp.sum(w * jnp.sum(r * r, axis=1)) / n
    sparse = lam * jnp.sum(w * jnp.sum(jnp.abs(codes), axis=1)) / n
    return rec, sparse


def loss_value(X, atoms, codes, bias, lam, w):
    """L(D, Z, b) without input checks (the traceable core of ``dictionary_loss``)."""
    rec, sparse = loss_terms(X, atoms, codes, bias, lam, w)
    return rec + sparse


@full_precision
def dictionary_loss(
    X: Float[ArrayLike, "n_samples n_features"],
    atoms: Float[ArrayLike, "width n_features"],
    codes: Float[ArrayLike, "n_samples width"],
    bias: Float[ArrayLike, " n_features"] | None,
    lam: float,
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
) -> Float[Array, ""]:
    """L = (1/2N) Σ w_n||x_n − b − D z_n||² + (λ/N) Σ w_n||z_n||₁ (``bias=None`` means b = 0)."""
    X, atoms, codes, bias = check_dictionary(X, atoms, codes, bias)
    lam = check_lam(lam, X.dtype)
    w = check_weights(weights, X.shape[0], X.dtype)
    return loss_value(X, atoms, codes, bias, lam, w)
