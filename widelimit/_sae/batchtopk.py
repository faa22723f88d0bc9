"""BatchTopK (Bussmann et al. 2024) and Matryoshka BatchTopK (Bussmann et al. 2025) SAEs.

Training codes keep the k·B largest entries of ReLU(π) over a whole batch of B rows (π =
W_enc (x − b_dec) + b_enc), so rows share a budget of k codes on average. At inference the batch
rule becomes a threshold: z_i = ReLU(π_i) · H(π_i − θ), with θ the running mean of the smallest
kept training code (SAELens saves these SAEs as JumpReLU files with that threshold).

BatchTopK loss: (1/2B)Σ||x − x̂||². Matryoshka loss: Σ_m (1/2B)Σ_n ||x_n − b_dec − Σ_{i<m} z_ni W_dec,i||²
over the nested prefix widths m (the last is width), so each prefix is a dictionary on its own.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import AbstractSAE, half_sq_error, pre_acts


def batch_topk(acts, k: float):
    """``acts`` (≥ 0) with only its int(k·B) largest entries over the whole batch kept."""
    m = max(1, min(int(k * acts.shape[0]), acts.size))
    flat = acts.ravel()
    _, idx = jax.lax.top_k(flat, m)
    return jnp.zeros_like(flat).at[idx].set(flat[idx]).reshape(acts.shape)


def _min_positive(Z):
    big = jnp.finfo(Z.dtype).max
    m = jnp.min(jnp.where(Z > 0, Z, big))
    return jnp.where(m < big, m, jnp.nan)


class _BatchTopKBase(AbstractSAE):
    """The fields and rules BatchTopK and Matryoshka share."""

    W_enc: Float[Array, "width n_features"]
    b_enc: Float[Array, " width"]
    W_dec: Float[Array, "width n_features"]
    b_dec: Float[Array, " n_features"]
    threshold: Float[Array, " width"]
    k: float = eqx.field(static=True, default=1.0)
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)
    rescale_acts_by_decoder_norm: bool = eqx.field(static=True, default=False)
    threshold_lr: float = eqx.field(static=True, default=0.01)
    config: str = eqx.field(static=True, default="{}")

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        """ReLU(π) · H(π − θ) (the inference rule)."""
        pre = pre_acts(self, X)
        return jax.nn.relu(pre) * (pre > self.threshold)

    def encode_batch(
        self, X: Float[Array, "n_samples n_features"]
    ) -> Float[Array, "n_samples width"]:
        """The int(k·B) largest ReLU(π) over the batch (the training rule)."""
        return batch_topk(jax.nn.relu(pre_acts(self, X)), self.k)

    def after_step(self, aux):
        """Unit decoder rows; θ ← (1 − lr)θ + lr·(smallest kept code)."""
        sae = self.normalised()
        m = jax.lax.stop_gradient(aux["min_positive"])
        lr = self.threshold_lr
        th = jnp.where(jnp.isnan(m), sae.threshold, (1 - lr) * sae.threshold + lr * m)
        return eqx.tree_at(lambda s: s.threshold, sae, th)


class BatchTopKSAE(_BatchTopKBase):
    """BatchTopK SAE: ``encode`` is the inference rule (threshold θ), ``encode_batch`` the training
    rule (top k·B over the batch)."""

    architecture: ClassVar[str] = "batchtopk"

    def loss(self, X, lam):
        """(1/2B)Σ||x − x̂||² with batch top-k codes (λ unused)."""
        Z = self.encode_batch(X)
        return half_sq_error(X, self.decode(Z)), {"min_positive": _min_positive(Z)}


class MatryoshkaSAE(_BatchTopKBase):
    """Matryoshka BatchTopK SAE: BatchTopK codes, a loss summed over nested prefixes ``widths``."""

    widths: tuple[int, ...] = eqx.field(static=True, default=())
    architecture: ClassVar[str] = "matryoshka_batchtopk"

    def __check_init__(self):
        w = self.widths
        if w and (list(w) != sorted(set(w)) or w[0] < 1 or w[-1] != self.W_dec.shape[0]):
            raise ValueError(
                f"Matryoshka `widths` must be strictly increasing, ≥ 1 and end at width "
                f"= {self.W_dec.shape[0]}; got {list(w)}"
            )

    def loss(self, X, lam):
        """Σ over prefixes m of (1/2B)Σ||x − b_dec − Z[:, :m] W_dec[:m]||² (λ unused)."""
        Z = self.encode_batch(X)
        Zd = Z / self.decoder_norms() if self._rescale() else Z
        total = 0.0
        for m in self.widths or (self.W_dec.shape[0],):
            total = total + half_sq_error(X, Zd[:, :m] @ self.W_dec[:m] + self.b_dec)
        return total, {"min_positive": _min_positive(Z)}
