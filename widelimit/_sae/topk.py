"""TopK and AbsTopK SAEs (Gao et al. 2024; SAELens ``topk``, ``abstopk``).

TopK: z = ReLU of the k largest entries of the pre-activation W_enc (x − b_dec) + b_enc, the rest 0.
AbsTopK: the k entries of largest magnitude, signs kept (codes may be negative).
Training loss (both): the reconstruction error (1/2B)Σ||x − x̂||²; k sets the sparsity.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import AbstractSAE, half_sq_error, pre_acts


def keep_topk(values, scores, k: int):
    """``values`` where ``scores`` is among the k largest of its row, 0 elsewhere."""
    _, idx = jax.lax.top_k(scores, k)
    mask = jnp.zeros(scores.shape, bool).at[jnp.arange(scores.shape[0])[:, None], idx].set(True)
    return jnp.where(mask, values, 0)


class _KSparseSAE(AbstractSAE):
    """The fields and loss TopK and AbsTopK share."""

    W_enc: Float[Array, "width n_features"]
    b_enc: Float[Array, " width"]
    W_dec: Float[Array, "width n_features"]
    b_dec: Float[Array, " n_features"]
    k: int = eqx.field(static=True, default=1)
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)
    rescale_acts_by_decoder_norm: bool = eqx.field(static=True, default=False)
    config: str = eqx.field(static=True, default="{}")

    def loss(self, X, lam):
        """(1/2B)Σ||x − x̂||² (λ unused: k sets the sparsity)."""
        return half_sq_error(X, self(X)), {}


class TopKSAE(_KSparseSAE):
    """TopK SAE: k codes per row (fewer if some of the top k pre-activations are ≤ 0)."""

    architecture: ClassVar[str] = "topk"

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        """ReLU(top-k(W_enc (x − b_dec) + b_enc))."""
        pre = pre_acts(self, X)
        return jax.nn.relu(keep_topk(pre, pre, self.k))


class AbsTopKSAE(_KSparseSAE):
    """AbsTopK SAE: the k pre-activations of largest |·|, signs kept (bidirectional features)."""

    architecture: ClassVar[str] = "abstopk"
    signed_codes: ClassVar[bool] = True

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        """top-k by |·| of W_enc (x − b_dec) + b_enc, signed."""
        pre = pre_acts(self, X)
        return keep_topk(pre, jnp.abs(pre), self.k)
