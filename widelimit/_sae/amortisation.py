"""The amortisation gap: how far an SAE's encoder is from the exact codes of its own dictionary.

gap = L(D, Z'_SAE, b) − min_{Z ≥ 0} L(D, Z, b) ≥ 0, with (D, Z'_SAE, b) = ``sae.as_dictionary(X)``.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core.objective import loss_value
from .._core.precision import full_precision
from .._core.results import RESULTS
from .._core.validate import check_lam, check_matrix
from .._finite.codes import solve_codes, warn_unsolved
from .base import AbstractSAE


class AmortisationGap(eqx.Module):
    """``gap`` = ``sae_loss`` − ``exact_loss`` ≥ 0 (to the code solve's tolerance), with the exact
    codes' status: ``code_kkt`` (worst KKT residual, units of λ) and ``result``. ``float()`` of it
    is the gap."""

    gap: Float[Array, ""]
    sae_loss: Float[Array, ""]
    exact_loss: Float[Array, ""]
    code_kkt: Float[Array, ""]
    result: RESULTS

    def __float__(self) -> float:
        return float(self.gap)


@full_precision
def amortisation_gap(
    sae: AbstractSAE,
    X: Float[ArrayLike, "n_samples n_features"],
    lam: float,
    *,
    tol: float = 1e-4,
    max_steps: int = 500,
    throw: bool = False,
) -> AmortisationGap:
    """L(SAE codes) − L(exact codes on the same unit decoder and bias) ≥ 0, the exact codes solved
    by ``solve_codes`` (the fitter's solver; ``tol``, ``max_steps`` and ``throw`` as there; codes
    short of tol come with a warning, as from ``encode``)."""
    X = check_matrix(X, "X")
    lam = check_lam(lam, X.dtype)
    D, Zs, b = sae.as_dictionary(X)
    # from zero, as a fit's first epoch: a warm start at the SAE's codes was measured slower to
    # reach the KKT tolerance (the SAE's many small activations are slow to switch off)
    sol = solve_codes(D, b, X, lam, tol=tol, max_steps=max_steps, throw=throw)
    # a gap from codes short of tol is not a bound
    warn_unsolved(sol.kkt, tol, max_steps, what="amortisation_gap")
    w = jnp.ones(X.shape[0], X.dtype)
    sae_loss = loss_value(X, D, Zs, b, lam, w)
    exact = loss_value(X, D, sol.codes, b, lam, w)
    return AmortisationGap(sae_loss - exact, sae_loss, exact, sol.kkt, sol.result)
