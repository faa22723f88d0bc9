"""Atom and bias updates for fixed codes (SPEC §3), all atoms at once.

With A = Zᵀ W Z (n_atoms × n_atoms) and B = Zᵀ W (X − b) (n_atoms × n_features), the reconstruction
term is f(D) = ½ tr(D A Dᵀ) − ⟨B, D⟩ + const. A ≼ diag(L_k), L_k = Σ_j |A_kj| (Gershgorin), so
f(D') ≤ f(D) + ⟨∇f, D' − D⟩ + ½ Σ_k L_k ||d'_k − d_k||², which separates over atoms: minimising it on
the product of unit spheres gives the Jacobi-style update d_k ← normalise(d_k − (AD − B)_k/L_k)
for every k in one array operation, and never increases f.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def normalise_rows(D):
    """Rows scaled to unit norm (zero rows left as they are)."""
    n = jnp.linalg.norm(D, axis=1, keepdims=True)
    return jnp.where(n > 0, D / jnp.where(n > 0, n, 1), D)


def atom_step(D, A, B):
    """One majorise–minimise step on all atoms; unused atoms (A_kk = 0) stay put."""
    L = jnp.sum(jnp.abs(A), axis=1, keepdims=True)
    grad = A @ D - B
    U = D - grad / jnp.where(L > 0, L, 1)
    return jnp.where(L > 0, normalise_rows(U), D)


def atom_update(D, A, B, n_steps: int):
    """``n_steps`` monotone atom steps (``lax.fori_loop``)."""
    return lax.fori_loop(0, n_steps, lambda _, D: atom_step(D, A, B), D)


def bias_update(X, Z, D, w):
    """b = Σ w_n (x_n − D z_n) / Σ w_n (exact minimiser for fixed D, Z)."""
    return (w @ (X - Z @ D)) / jnp.sum(w)


def code_gram(Z, w, support: int | None = None):
    """A = Zᵀ W Z. With ``support`` s (and K ≥ 2048, where it pays) it is accumulated sparsely:
    each row's s largest codes scatter their outer product (O(N s²) instead of O(N K²)); rows with
    more than s nonzeros are added densely (the 256 largest supports; all rows if more overflow)."""
    n, k = Z.shape
    if support is None or k < 2048 or support >= k:
        return Z.T @ (w[:, None] * Z)
    count = jnp.sum(Z > 0, axis=1)
    over = count > support
    vals, idx = lax.top_k(Z, support)
    vals = jnp.where(over[:, None], 0, vals)
    A = jnp.zeros((k, k), Z.dtype).at[idx[:, :, None], idx[:, None, :]].add(
        vals[:, :, None] * (w[:, None] * vals)[:, None, :]
    )
    m = min(n, 256)
    _, rows = lax.top_k(count, m)
    Zo = jnp.where(over[rows][:, None], Z[rows], 0)
    A = A + Zo.T @ (w[rows][:, None] * Zo)
    return lax.cond(jnp.sum(over) > m, lambda: Z.T @ (w[:, None] * Z), lambda: A)
