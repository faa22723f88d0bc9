"""The theory applied to an SAE of any architecture (docs/theory.md, "SAEs").

An SAE is stationary in its own training loss, not in the dictionary objective L, so only some of
SPEC §4's conditions are necessary for it. With r_n = x_n − x̂_n, codes z_i(n) as its loss sees them
and unit decoder rows d_i, every architecture here has three exact symmetries or free directions:

- **decoder (tangential)**: moving d_i on the sphere changes only x̂, so P⊥_{d_i} Σ_n z_i(n) r_n = 0;
- **encoder scale (radial)**: scaling the encoder row i (with its bias, threshold or magnitude
  gate) scales z_i and leaves which codes fire unchanged, so Σ_n z_i(n)⟨d_i, r_n⟩ = λ_own Σ_n z_i(n),
  with λ_own the L1 weight on z (the standard SAE) and 0 for TopK, AbsTopK, BatchTopK, JumpReLU
  (its L0 count is unchanged) and Gated (its L1 acts on the gate path);
- **bias**: moving b_dec by δ and the encoder biases by W_enc δ leaves the codes unchanged, so
  Σ_n r_n = 0.

Matryoshka's loss sums nested reconstructions, so these hold with r_n replaced by the sum of the
prefix residuals that contain atom i (and, for the bias, all of them). The per-point code KKT
condition (1) and the feature–feature hull (5) are not necessary for any SAE: their perturbations
change one code at one point, which no encoder of these forms can do. The wide certificate (4) is a
global bound and is reported for every model.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core.precision import full_precision
from .._core.validate import check_lam, check_matrix
from .._sae.base import AbstractSAE
from .._sae.batchtopk import BatchTopKSAE, MatryoshkaSAE
from .._sae.standard import ReluSAE

CONDITIONS = ("codes", "atoms_tangential", "atoms_radial", "bias", "wide_certificate", "hull")


def applicable_conditions(sae: AbstractSAE) -> dict[str, str]:
    """For each condition, whether it must hold at a stationary point of this architecture's loss:
    'necessary', 'necessary (level-summed residuals)' (Matryoshka), 'not necessary' or 'global'."""
    form = "necessary (level-summed residuals)" if isinstance(sae, MatryoshkaSAE) else "necessary"
    return {
        "codes": "not necessary",
        "atoms_tangential": form,
        "atoms_radial": form,
        "bias": form,
        "wide_certificate": "global",
        "hull": "not necessary",
    }


def training_codes(sae: AbstractSAE, X):
    """The codes the architecture's training loss sees (BatchTopK: the batch rule over X)."""
    if isinstance(sae, (BatchTopKSAE, MatryoshkaSAE)):
        return sae.encode_batch(X)
    return sae.encode(X)


class SAEStationarity(eqx.Module):
    """Residuals of the SAE's own first-order conditions, in units of the rms residual norm:
    ``tangential[i]`` = ||P⊥ S_i|| / (Σ|z_i|·rms), ``radial[i]`` = |ρ_i − λ_own| / rms with
    ρ_i = ⟨d_i, S_i⟩/Σ|z_i| (S_i = Σ_n z_i(n) r_n), ``bias`` = ||Σ r_n|| / (N·rms)."""

    tangential: Float[Array, " width"]
    radial: Float[Array, " width"]
    own_lam: Float[Array, " width"]
    bias: Float[Array, ""]
    lam_own: Float[Array, ""]
    rms_residual: Float[Array, ""]


def _level_sums(sae, X, D, Zp):
    """S (width, d): Σ_n z_i(n) r_n over the levels containing atom i; R_sum: Σ over levels of
    Σ_n r_n; n_levels per atom."""
    b = sae.b_dec
    if not isinstance(sae, MatryoshkaSAE):
        R = X - b - Zp @ D
        return Zp.T @ R, jnp.sum(R, axis=0), jnp.sqrt(jnp.mean(jnp.sum(R**2, axis=1)))
    K = D.shape[0]
    S = jnp.zeros_like(D)
    R_sum = jnp.zeros(X.shape[1], X.dtype)
    for m in sae.widths or (K,):
        R = X - b - Zp[:, :m] @ D[:m]
        S = S.at[:m].add(Zp[:, :m].T @ R)
        R_sum = R_sum + jnp.sum(R, axis=0)
    R = X - b - Zp @ D
    return S, R_sum, jnp.sqrt(jnp.mean(jnp.sum(R**2, axis=1)))


@full_precision
def sae_stationarity(sae: AbstractSAE, X: Float[ArrayLike, "n_samples n_features"], lam_own=None):
    """The SAE's own stationarity residuals (module docstring). ``lam_own``: the L1 weight of a
    standard SAE's training (default: the median of its per-atom ρ_i, the λ its atoms imply);
    0 for the other architectures."""
    X = check_matrix(X, "X")
    D, Zp = sae.unit_decoder(training_codes(sae, X))
    S, R_sum, rms = _level_sums(sae, X, D, Zp)
    mass = jnp.sum(jnp.abs(Zp), axis=0)
    safe = jnp.where(mass > 0, mass, 1)
    radial_sum = jnp.sum(S * D, axis=1)
    rho = jnp.where(mass > 0, radial_sum / safe, 0.0)
    tang = S - radial_sum[:, None] * D
    if isinstance(sae, ReluSAE):
        live = np.asarray(mass) > 0
        lam_own = (
            float(np.median(np.asarray(rho)[live])) if lam_own is None and live.any() else lam_own
        )
        lam_own = 0.0 if lam_own is None else lam_own
    else:
        lam_own = 0.0
    scale = jnp.where(rms > 0, rms, 1)
    return SAEStationarity(
        tangential=jnp.where(mass > 0, jnp.linalg.norm(tang, axis=1) / (safe * scale), 0),
        radial=jnp.where(mass > 0, jnp.abs(rho - lam_own) / scale, 0),
        own_lam=rho,
        bias=jnp.linalg.norm(R_sum) / (X.shape[0] * scale),
        lam_own=jnp.asarray(lam_own, X.dtype),
        rms_residual=rms,
    )


class ImpliedLam(NamedTuple):
    """The λ an SAE's codes imply: the median of ⟨d_i, r_n⟩ over its active codes (exact lasso
    codes give exactly λ there), the quartiles, and ``spread`` = (q75 − q25)/|median| (0 when the
    codes fit one λ exactly)."""

    lam: float
    q25: float
    q75: float
    spread: float
    n_active: int


@full_precision
def implied_lam(sae: AbstractSAE, X: Float[ArrayLike, "n_samples n_features"]) -> ImpliedLam:
    """λ̂ = median of ⟨d_i, r_n⟩ over (n, i) with z_i(n) > 0, on ``sae.as_dictionary(X)``."""
    X = check_matrix(X, "X")
    return implied_lam_of(X, *sae.as_dictionary(X))


def implied_lam_of(X, D, Z, b) -> ImpliedLam:
    """``implied_lam`` of the dictionary (D, Z, b) that an SAE is read as."""
    corr = np.asarray((X - b - Z @ D) @ D.T)
    active = corr[np.asarray(Z) > 0]
    if active.size == 0:
        raise ValueError("the SAE has no active codes on X, so it implies no λ")
    q25, med, q75 = (float(v) for v in np.quantile(active, [0.25, 0.5, 0.75]))
    spread = (q75 - q25) / abs(med) if med != 0 else float("inf")
    return ImpliedLam(med, q25, q75, spread, int(active.size))


def check_lam_or_implied(sae, X, lam, imp: ImpliedLam):
    """``lam`` checked, or the implied λ ``imp.lam`` (an error when it is not positive)."""
    if lam is not None:
        return check_lam(lam, X.dtype)
    if not imp.lam > 0:
        raise ValueError(
            f"the {sae.architecture} SAE's codes imply λ = {imp.lam:.3g} ≤ 0 (its active codes are "
            "not shrunk); pass `lam=` (`--lam` in the CLI) to judge it at a chosen λ"
        )
    return imp.lam
