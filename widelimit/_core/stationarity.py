"""First-order residuals of a dictionary (X, D, Z, b) at λ (SPEC §4, conditions 1–4), in one
compiled pass: what ``check_optimality`` reports and what ``fit_dictionary`` records at its end.

code KKT: max over entries of |⟨d_i, r_n⟩ − λ|/λ where z_i(n) > 0, (⟨d_i, r_n⟩ − λ)₊/λ elsewhere;
atom stationarity: ||Σ_n w z_i(n) r_n − λ(Σ_n w z_i(n)) d_i|| / (λ Σ_n w z_i(n));
bias: ||Σ_n w r_n||/(Nλ); wide certificate: max_n ||r_n||/λ.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp


@eqx.filter_jit
def first_order_residuals(X, D, Z, b, lam, w, fit_bias: bool):
    """(code KKT max, code KKT per atom, atom stationarity per atom, unit unabsorbed direction per
    atom, bias residual (0 without a bias), wide certificate, mask of points with ||r_n|| > λ)."""
    n = jnp.sum(w)
    R = X - b - Z @ D
    corr = R @ D.T  # ⟨d_i, r_n⟩
    kkt = jnp.where(Z > 0, jnp.abs(corr - lam), jnp.maximum(corr - lam, 0)) / lam
    code_kkt_per_atom = jnp.max(kkt, axis=0)
    WZ = w[:, None] * Z
    S = WZ.T @ R  # Σ_n w z_i(n) r_n
    mass = jnp.sum(WZ, axis=0)
    tang = S - jnp.sum(S * D, axis=1, keepdims=True) * D
    resid = S - lam * mass[:, None] * D
    atom_stat = jnp.where(
        mass > 0, jnp.linalg.norm(resid, axis=1) / (lam * jnp.where(mass > 0, mass, 1)), 0
    )
    tn = jnp.linalg.norm(tang, axis=1, keepdims=True)
    direction = jnp.where(tn > 0, tang / jnp.where(tn > 0, tn, 1), 0)
    bias_res = jnp.linalg.norm(w @ R) / (n * lam) if fit_bias else jnp.zeros((), X.dtype)
    rn = jnp.linalg.norm(R, axis=1)
    wide = jnp.max(jnp.where(w > 0, rn, 0)) / lam
    return (
        jnp.max(kkt, initial=0.0),
        code_kkt_per_atom,
        atom_stat,
        direction,
        bias_res,
        wide,
        rn > lam,
    )
