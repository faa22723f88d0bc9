"""The amortisation gap: how far an SAE's encoder is from the exact codes of its own dictionary.

gap = L(D, Z'_SAE, b) − min_{Z ≥ 0} L(D, Z, b) ≥ 0, with (D, Z'_SAE, b) = ``sae.as_dictionary(X)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .._core.objective import loss_value
from .._core.precision import full_precision
from .._core.validate import check_lam, check_matrix
from .._finite.codes import encode
from .base import AbstractSAE


@full_precision
def amortisation_gap(
    sae: AbstractSAE, X: Float[ArrayLike, "n_samples n_features"], lam: float, **encode_kw
):
    """L(SAE codes) − L(exact codes on the same unit decoder and bias) ≥ 0."""
    X = check_matrix(X, "X")
    lam = check_lam(lam, X.dtype)
    D, Zs, b = sae.as_dictionary(X)
    Z = encode(D, b, X, lam, **encode_kw)
    w = jnp.ones(X.shape[0], X.dtype)
    return loss_value(X, D, Zs, b, lam, w) - loss_value(X, D, Z, b, lam, w)
