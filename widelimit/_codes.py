"""Exact nonnegative-lasso codes for a fixed dictionary (SPEC §3).

For every point: z_n = argmin_{z ≥ 0} ½||x_n − b − Dz||² + λ||z||₁, solved by FISTA with adaptive
restart on the Gram matrix G = D Dᵀ (atoms are rows), batched over all points, stopping when the
KKT residual max_n,k |z − [z − (Gz − c + λ)]₊| ≤ tol·λ (c = D(x_n − b)).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from ._validate import check_lam, check_matrix


def _lipschitz(G):
    return jnp.maximum(jnp.linalg.eigvalsh(G)[-1], jnp.finfo(G.dtype).tiny)


def kkt_residual(Z, G, C, lam):
    """Natural residual of the nonnegative lasso, per entry (0 exactly at the optimum)."""
    grad = Z @ G - C + lam
    return jnp.abs(Z - jnp.maximum(Z - grad, 0))


@eqx.filter_jit
def nonneg_lasso(G, C, lam, Z0, tol, max_steps):
    """FISTA with gradient restart for min_{Z≥0} ½ tr(Z G Zᵀ) − ⟨C, Z⟩ + λ Σ Z; returns (Z, steps)."""
    L = _lipschitz(G)
    thresh = tol * lam

    def prox_step(Y):
        return jnp.maximum(Y - (Y @ G - C + lam) / L, 0)

    def cond(s):
        Z, _, _, k, res = s
        return (res > thresh) & (k < max_steps)

    def body(s):
        Z, Yk, t, k, _ = s
        Zn = prox_step(Yk)
        # per-point momentum, restarted where it points uphill (O'Donoghue & Candès 2015)
        tn = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        up = jnp.sum((Yk - Zn) * (Zn - Z), axis=1, keepdims=True) > 0
        Yn = Zn + jnp.where(up, 0.0, (t - 1) / tn) * (Zn - Z)
        tn = jnp.where(up, 1.0, tn)
        res = jnp.max(kkt_residual(Zn, G, C, lam))
        return Zn, Yn, tn, k + 1, res

    res0 = jnp.max(kkt_residual(Z0, G, C, lam))
    init = (Z0, Z0, jnp.ones((Z0.shape[0], 1), Z0.dtype), jnp.asarray(0, jnp.int32), res0)
    Z, _, _, k, _ = lax.while_loop(cond, body, init)
    return Z, k


def encode(
    atoms: Float[ArrayLike, "n_atoms n_features"],
    bias: Float[ArrayLike, " n_features"] | None,
    X: Float[ArrayLike, "n_samples n_features"],
    lam: float,
    *,
    init: Float[ArrayLike, "n_samples n_atoms"] | None = None,
    tol: float = 1e-6,
    max_steps: int = 10000,
) -> Float[Array, "n_samples n_atoms"]:
    """Exact codes z_n = argmin_{z≥0} ½||x_n − b − Dz||² + λ||z||₁ (``bias=None`` means b = 0).

    Stops when the KKT residual is ≤ tol·λ for every entry, or after ``max_steps``.
    """
    X = check_matrix(X, "X")
    atoms = check_matrix(atoms, "atoms")
    if atoms.shape[1] != X.shape[1]:
        raise ValueError(f"`atoms` has {atoms.shape[1]} features but `X` has {X.shape[1]}")
    dt = jnp.result_type(X.dtype, atoms.dtype)
    X, atoms = X.astype(dt), atoms.astype(dt)
    lam = check_lam(lam, dt)
    b = jnp.zeros(X.shape[1], dt) if bias is None else jnp.asarray(bias, dt)
    if b.shape != (X.shape[1],):
        raise ValueError(f"`bias` must have shape ({X.shape[1]},), got {b.shape}")
    Z0 = jnp.zeros((X.shape[0], atoms.shape[0]), dt) if init is None else jnp.asarray(init, dt)
    if Z0.shape != (X.shape[0], atoms.shape[0]):
        raise ValueError(f"`init` must have shape {(X.shape[0], atoms.shape[0])}, got {Z0.shape}")
    return gram_codes(atoms, b, X, lam, jnp.maximum(Z0, 0), tol, max_steps)


def decode(
    atoms: Float[ArrayLike, "n_atoms n_features"],
    bias: Float[ArrayLike, " n_features"] | None,
    codes: Float[ArrayLike, "n_samples n_atoms"],
) -> Float[Array, "n_samples n_features"]:
    """Reconstruction x̂_n = b + D z_n."""
    atoms = jnp.asarray(atoms)
    out = jnp.asarray(codes, atoms.dtype) @ atoms
    return out if bias is None else out + jnp.asarray(bias, atoms.dtype)


def gram_codes(atoms, b, X, lam, Z0, tol, max_steps):
    """Traceable core used by the fitting loops: codes for (atoms, b) warm-started at Z0."""
    return nonneg_lasso(atoms @ atoms.T, (X - b) @ atoms.T, lam, Z0, tol, max_steps)[0]
