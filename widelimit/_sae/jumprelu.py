"""JumpReLU SAE (Rajamanoharan et al. 2024; SAELens ``jumprelu``).

z_i = π_i · H(π_i − θ_i) with π = W_enc (x − b_dec) + b_enc and a learned threshold θ_i > 0.
Training loss: (1/2B)Σ||x − x̂||² + (λ/B)Σ_n ||z_n||₀. H has no useful derivative, so training uses the
paper's straight-through pseudo-derivatives with a rectangle kernel K of bandwidth ε:
∂/∂θ [π H(π − θ)] ≈ −(θ/ε) K((π − θ)/ε) and ∂/∂θ H(π − θ) ≈ −(1/ε) K((π − θ)/ε).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import AbstractSAE, half_sq_error, pre_acts


def _rectangle(u):
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def jump(pre, theta, bandwidth):
    """π · H(π − θ), with the straight-through derivative in θ (the exact one in π)."""
    return jnp.where(pre > theta, pre, 0)


@jump.defjvp
def _jump_jvp(bandwidth, primals, tangents):
    pre, theta = primals
    d_pre, d_theta = tangents
    kern = _rectangle((pre - theta) / bandwidth) / bandwidth
    out = jump(pre, theta, bandwidth)
    return out, jnp.where(pre > theta, d_pre, 0) - theta * kern * d_theta


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def step(pre, theta, bandwidth):
    """H(π − θ), with the straight-through derivative −K((π − θ)/ε)/ε in θ (none in π)."""
    return (pre > theta).astype(pre.dtype)


@step.defjvp
def _step_jvp(bandwidth, primals, tangents):
    pre, theta = primals
    _, d_theta = tangents
    kern = _rectangle((pre - theta) / bandwidth) / bandwidth
    return step(pre, theta, bandwidth), -kern * d_theta


class JumpReLUSAE(AbstractSAE):
    """JumpReLU SAE with per-feature threshold ``threshold`` (width,)."""

    W_enc: Float[Array, "width n_features"]
    b_enc: Float[Array, " width"]
    W_dec: Float[Array, "width n_features"]
    b_dec: Float[Array, " n_features"]
    threshold: Float[Array, " width"]
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)
    bandwidth: float = eqx.field(static=True, default=1e-3)
    config: str = eqx.field(static=True, default="{}")

    architecture: ClassVar[str] = "jumprelu"

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        """ReLU(π) · H(π − θ)."""
        pre = pre_acts(self, X)
        return jax.nn.relu(pre) * (pre > self.threshold)

    def loss(self, X, lam):
        """(1/2B)Σ||x − x̂||² + (λ/B)Σ||z||₀ (straight-through in θ)."""
        pre = pre_acts(self, X)
        Z = jump(jax.nn.relu(pre), self.threshold, self.bandwidth)
        l0 = jnp.mean(jnp.sum(step(pre, self.threshold, self.bandwidth), axis=1))
        return half_sq_error(X, self.decode(Z)) + lam * l0, {}

    def after_step(self, aux):
        """Unit decoder rows and θ ≥ 0."""
        sae = self.normalised()
        return eqx.tree_at(lambda m: m.threshold, sae, jnp.maximum(sae.threshold, 0))
