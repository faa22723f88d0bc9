"""The standard (ReLU) SAE, trained on the dictionary-learning objective L itself (SPEC §1).

z = ReLU(W_enc (x − b_dec) + b_enc), x̂ = b_dec + W_decᵀ z with unit-norm decoder rows; the loss is
L(W_dec, Z, b_dec) = (1/2N)Σ||x − x̂||² + (λ/N)Σ||z||₁, the same L as a dictionary.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core.objective import loss_value
from .._core.precision import full_precision
from .base import AbstractSAE, half_sq_error, pre_acts


class ReluSAE(AbstractSAE):
    """ReLU SAE (SAELens ``standard``): W_enc (width, n_features), b_enc (width,), W_dec
    (width, n_features) (the atoms) and b_dec (n_features,) (the bias)."""

    W_enc: Float[Array, "width n_features"]
    b_enc: Float[Array, " width"]
    W_dec: Float[Array, "width n_features"]
    b_dec: Float[Array, " n_features"]
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)
    config: str = eqx.field(static=True, default="{}")

    architecture: ClassVar[str] = "standard"

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        """ReLU(W_enc (x − b_dec) + b_enc)."""
        return jax.nn.relu(pre_acts(self, X))

    def loss(self, X, lam):
        """(1/2B)Σ||x − x̂||² + (λ/B)Σ||z||₁ (= L with unit decoder rows)."""
        Z = self.encode(X)
        return half_sq_error(X, self.decode(Z)) + lam * jnp.mean(jnp.sum(Z, axis=1)), {}


@full_precision
def sae_loss(sae: AbstractSAE, X, lam, w=None):
    """L(D, Z', b) of ``sae.as_dictionary(X)``: the dictionary objective of the SAE's own codes."""
    w = jnp.ones(X.shape[0], X.dtype) if w is None else w
    D, Z, b = sae.as_dictionary(X)
    return loss_value(X, D, Z, b, lam, w)
