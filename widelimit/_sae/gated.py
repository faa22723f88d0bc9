"""Gated SAE (Rajamanoharan et al. 2024; SAELens ``gated``).

Which codes fire and how large they are come from two paths that share W_enc:
π_gate = W_enc (x − b_dec) + b_gate, π_mag = (exp(r_mag) ⊙ W_enc)(x − b_dec) + b_mag,
z = H(π_gate) ⊙ ReLU(π_mag). Training loss (unit decoder rows):
(1/2B)Σ||x − x̂(z)||² + (λ/B)Σ||ReLU(π_gate)||₁ + (1/2B)Σ||x − x̂_frozen(ReLU(π_gate))||²,
the last with the decoder held fixed, so that the gate path learns through it.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import AbstractSAE, half_sq_error


class GatedSAE(AbstractSAE):
    """Gated SAE: W_enc, b_gate, b_mag, r_mag (width,) each, W_dec, b_dec."""

    W_enc: Float[Array, "width n_features"]
    b_gate: Float[Array, " width"]
    b_mag: Float[Array, " width"]
    r_mag: Float[Array, " width"]
    W_dec: Float[Array, "width n_features"]
    b_dec: Float[Array, " n_features"]
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)
    config: str = eqx.field(static=True, default="{}")

    architecture: ClassVar[str] = "gated"

    def _paths(self, X):
        s = self.sae_in(X)
        gate = s @ self.W_enc.T + self.b_gate
        mag = s @ (self.W_enc * jnp.exp(self.r_mag)[:, None]).T + self.b_mag
        return gate, mag

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        """H(π_gate) ⊙ ReLU(π_mag)."""
        gate, mag = self._paths(X)
        return (gate > 0) * jax.nn.relu(mag)

    def loss(self, X, lam):
        """Reconstruction + λ·||ReLU(π_gate)||₁ + the frozen-decoder auxiliary reconstruction."""
        gate, mag = self._paths(X)
        Z = jax.lax.stop_gradient((gate > 0).astype(X.dtype)) * jax.nn.relu(mag)
        g = jax.nn.relu(gate)
        frozen = g @ jax.lax.stop_gradient(self.W_dec) + jax.lax.stop_gradient(self.b_dec)
        sparsity = lam * jnp.mean(jnp.sum(g, axis=1))
        return half_sq_error(X, self.decode(Z)) + sparsity + half_sq_error(X, frozen), {}
