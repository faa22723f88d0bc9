"""What every SAE architecture shares: the input map, the linear decoder, and its reading as a
sparse dictionary (SPEC §1).

An SAE maps x to codes z = encode(x) ≥ 0 and reconstructs x̂ = b_dec + Σ_i z_i W_dec,i (with
``rescale_acts_by_decoder_norm``: x̂ = b_dec + Σ_i z_i W_dec,i / ||W_dec,i||). The encoder sees
x − b_dec when ``apply_b_dec_to_input`` (SAELens's default) and x otherwise.

Read as a dictionary, the atoms are the unit decoder rows d_i = W_dec,i / ||W_dec,i|| and the codes
are rescaled so that x̂ = b + D z' is unchanged (``as_dictionary``); the theory's conditions and the
objective L(D, Z', b; λ) then apply to the SAE as they do to any dictionary.
"""

from __future__ import annotations

import json
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._finite.atoms import normalise_rows


class AbstractSAE(eqx.Module):
    """An SAE: ``encode``, ``decode``, ``__call__`` = decode ∘ encode, and ``loss`` (its training
    objective on a batch). Weights follow widelimit's row convention: W_enc (width, n_features),
    W_dec (width, n_features) (rows are the atoms), b_dec (n_features,) (the bias)."""

    # Each concrete class declares its own fields, in SAELens's order (AbstractVar would fix their
    # order here): W_enc, W_dec, b_dec, apply_b_dec_to_input (static bool) and config (static JSON).

    architecture: ClassVar[str] = "abstract"
    # True when the codes may be negative (AbsTopK): the dictionary then has atoms ±d_i
    signed_codes: ClassVar[bool] = False

    def sae_in(
        self, X: Float[Array, "n_samples n_features"]
    ) -> Float[Array, "n_samples n_features"]:
        """x − b_dec (or x when ``apply_b_dec_to_input`` is False)."""
        return X - self.b_dec if self.apply_b_dec_to_input else X

    def decoder_norms(self) -> Float[Array, " width"]:
        return jnp.linalg.norm(self.W_dec, axis=1)

    def _rescale(self) -> bool:
        return bool(getattr(self, "rescale_acts_by_decoder_norm", False))

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples width"]:
        raise NotImplementedError

    def decode(self, Z: Float[Array, "n_samples width"]) -> Float[Array, "n_samples n_features"]:
        """b_dec + Z W_dec (Z W_dec / ||W_dec rows|| with ``rescale_acts_by_decoder_norm``)."""
        if self._rescale():
            Z = Z / self.decoder_norms()
        return Z @ self.W_dec + self.b_dec

    def __call__(
        self, X: Float[Array, "n_samples n_features"]
    ) -> Float[Array, "n_samples n_features"]:
        return self.decode(self.encode(X))

    @property
    def atoms(self) -> Float[Array, "width n_features"]:
        """The decoder rows as stored (``as_dictionary`` gives the unit atoms)."""
        return self.W_dec

    @property
    def bias(self) -> Float[Array, " n_features"]:
        return self.b_dec

    @property
    def width(self) -> int:
        return self.W_dec.shape[0]

    @property
    def saelens_config(self) -> dict:
        """The SAELens ``cfg.json`` this model was read from (empty when made in widelimit)."""
        return json.loads(self.config)

    def as_dictionary(
        self, X: Float[Array, "n_samples n_features"]
    ) -> tuple[
        Float[Array, "n_dict n_features"],
        Float[Array, "n_samples n_dict"],
        Float[Array, " n_features"],
    ]:
        """(D, Z', b): unit atoms, codes ≥ 0 and bias with b + Z' D = self(X) exactly.

        d_i = W_dec,i/||W_dec,i||, z'_i = z_i·||W_dec,i|| (z_i unchanged when the forward pass already
        rescales). Signed codes (AbsTopK) give 2K atoms [D; −D] with codes [z⁺, z⁻].
        """
        D, Zp = self.unit_decoder(self.encode(X))
        if self.signed_codes:
            return (
                jnp.concatenate([D, -D]),
                jnp.concatenate([jax.nn.relu(Zp), jax.nn.relu(-Zp)], 1),
                self.b_dec,
            )
        return D, Zp, self.b_dec

    def unit_decoder(self, Z):
        """(unit decoder rows, ``Z`` against them) with decode(Z) = b_dec + Z' D (signs kept)."""
        D = normalise_rows(self.W_dec)
        return D, (Z if self._rescale() else Z * self.decoder_norms())

    def normalised(self) -> AbstractSAE:
        """The same SAE after a training step's projection: decoder rows back to unit norm."""
        return eqx.tree_at(lambda m: m.W_dec, self, normalise_rows(self.W_dec))

    def after_step(self, aux) -> AbstractSAE:
        """Applied after every optimiser step of ``train_sae`` (unit decoder rows; BatchTopK also
        moves its inference threshold)."""
        return self.normalised()

    def loss(self, X: Float[Array, "n_samples n_features"], lam) -> tuple[Array, dict]:
        """This architecture's training objective on a batch, and what ``after_step`` needs."""
        raise NotImplementedError


def pre_acts(sae, X):
    """W_enc (x − b_dec) + b_enc, scaled by ||W_dec,i|| with ``rescale_acts_by_decoder_norm``."""
    pre = sae.sae_in(X) @ sae.W_enc.T + sae.b_enc
    return pre * sae.decoder_norms() if sae._rescale() else pre


def half_sq_error(X, Xhat):
    """(1/2N) Σ_n ||x_n − x̂_n||²."""
    return 0.5 * jnp.mean(jnp.sum((X - Xhat) ** 2, axis=-1))
