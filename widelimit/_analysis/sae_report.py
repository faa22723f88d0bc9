"""One report that judges any SAE against the theory at a λ (given, or the one its codes imply).

The chain L_SAE ≥ L_exact ≥ W(λ) ≥ (certified dual bound) holds for every SAE read as a dictionary
(``AbstractSAE.as_dictionary``): its own codes, the exact codes on its decoder and bias, the wide
limit. ``amortisation_gap`` = L_SAE − L_exact, ``gap_to_wide`` = (L_SAE − W)/|W|.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from .._core.objective import loss_value
from .._core.validate import check_matrix
from .._finite.codes import encode
from .._sae.base import AbstractSAE
from .._wide.solve import solve_wide
from .conditions import OptimalityReport, dictionary_report
from .sae_conditions import (
    ImpliedLam,
    SAEStationarity,
    applicable_conditions,
    check_lam_or_implied,
    implied_lam_of,
    sae_stationarity,
)


@dataclasses.dataclass(frozen=True)
class SAEReport:
    """An SAE judged by the theory. ``applies`` says, per condition, whether it must hold for this
    architecture; ``passed`` covers the necessary ones only."""

    architecture: str
    lam: float
    implied: ImpliedLam
    sae_loss: float
    exact_loss: float
    amortisation_gap: float
    wide_objective: float
    gap_to_wide: float
    stationarity: SAEStationarity
    dictionary: OptimalityReport
    applies: dict
    tol: float
    passed: bool

    def to_json(self) -> dict:
        st = self.stationarity
        return {
            "architecture": self.architecture, "lam": self.lam, "passed": self.passed,
            "implied_lam": self.implied.lam, "implied_lam_spread": self.implied.spread,
            "sae_loss": self.sae_loss, "exact_loss": self.exact_loss,
            "amortisation_gap": self.amortisation_gap, "wide_objective": self.wide_objective,
            "gap_to_wide": self.gap_to_wide, "applies": self.applies,
            "atoms_tangential_max": float(jnp.max(st.tangential, initial=0)),
            "atoms_radial_max": float(jnp.max(st.radial, initial=0)), "bias": float(st.bias),
            "lam_own": float(st.lam_own),
            "code_kkt_max": float(self.dictionary.code_kkt_max),
            "wide_certificate": float(self.dictionary.wide_certificate),
            "n_violated_pairs": len(self.dictionary.violated_pairs),
        }  # fmt: skip

    def summary(self) -> str:
        st, rep, t = self.stationarity, self.dictionary, self.tol

        def tag(ok, name):
            necessary = self.applies[name].startswith("necessary")
            return ("ok " if ok else "FAIL") if necessary else "n/a "

        tmax = float(jnp.max(st.tangential, initial=0))
        rmax = float(jnp.max(st.radial, initial=0))
        lines = [
            f"{self.architecture} SAE at λ = {self.lam:.4g}: "
            f"{'PASSED its necessary conditions' if self.passed else 'NOT stationary in its own loss'}",
            f"  implied λ (median ⟨d_i, r_n⟩ over active codes) = {self.implied.lam:.4g}, "
            f"spread (IQR/median) {self.implied.spread:.3g}",
            f"  L_SAE = {self.sae_loss:.6g}, exact codes L = {self.exact_loss:.6g} (amortisation gap "
            f"{self.amortisation_gap:.3g}), wide limit W = {self.wide_objective:.6g} "
            f"(gap {100 * self.gap_to_wide:.2f} %)",
            f"  [{tag(tmax <= t, 'atoms_tangential')}] atoms, tangential: worst {tmax:.3g} ({self.applies['atoms_tangential']})",
            f"  [{tag(rmax <= t, 'atoms_radial')}] atoms, radial (λ_own = {float(st.lam_own):.3g}): worst {rmax:.3g} ({self.applies['atoms_radial']})",
            f"  [{tag(float(st.bias) <= t, 'bias')}] bias: {float(st.bias):.3g} ({self.applies['bias']})",
            f"  [n/a ] codes (KKT at λ): worst {float(rep.code_kkt_max):.3g}·λ (not necessary for an SAE)",
            f"  [n/a ] feature–feature hull: {len(rep.violated_pairs)} violated pairs (not necessary for an SAE)",
            f"  [info] wide certificate: max ||r_n||/λ = {float(rep.wide_certificate):.3g}",
        ]  # fmt: skip
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def check_sae(sae: AbstractSAE, X, lam: float | None = None, *, tol: float = 1e-3) -> SAEReport:
    """Judge ``sae`` on activations ``X`` at ``lam`` (default: the λ its codes imply)."""
    if not isinstance(sae, AbstractSAE):
        raise TypeError(f"`sae` must be a widelimit SAE, got {type(sae).__name__}")
    X = check_matrix(X, "X")
    if X.shape[1] != sae.W_dec.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features but the SAE has {sae.W_dec.shape[1]}")
    X = jnp.asarray(X, jnp.result_type(X.dtype, sae.W_dec.dtype))
    D, Z, b = sae.as_dictionary(X)  # encoded once: the implied λ and the losses share it
    imp = implied_lam_of(X, D, Z, b)
    lam = check_lam_or_implied(sae, X, lam, imp)
    w = jnp.ones(X.shape[0], X.dtype)
    L_sae = float(loss_value(X, D, Z, b, lam, w))
    Z_exact = encode(D, b, X, lam)  # the fitter's solver and code tolerance (from zero)
    L_exact = float(loss_value(X, D, Z_exact, b, lam, w))
    W = float(solve_wide(X, lam).objective)
    st = sae_stationarity(sae, X)
    rep = dictionary_report(X, D, Z, b, lam, w, tol)
    applies = applicable_conditions(sae)
    passed = bool(
        float(jnp.max(st.tangential, initial=0)) <= tol
        and float(jnp.max(st.radial, initial=0)) <= tol
        and float(st.bias) <= tol
    )
    return SAEReport(
        sae.architecture, float(lam), imp, L_sae, L_exact, L_sae - L_exact, W,
        (L_sae - W) / max(abs(W), np.finfo(np.float64).tiny), st, rep, applies, tol, passed,
    )  # fmt: skip
