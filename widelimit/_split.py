"""Growing a dictionary by splitting atoms (SPEC §3): the warm start of a width sweep.

Atom k is split into normalise(d_k ± ε v_k), v_k the top principal direction (orthogonal to d_k) of
the residuals of the points that use it, weighted by their codes: C_k = Σ_n z_nk r_n r_nᵀ. All top
directions come from one batched power iteration (vmap over atoms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._atoms import normalise_rows


def _top_directions(D, Z, R, key, iters: int = 30):
    """v_k ⟂ d_k maximising vᵀ C_k v (power iteration); random ⟂ direction if C_k vanishes."""
    v0 = jax.random.normal(key, D.shape, D.dtype)

    def perp(v, d):
        v = v - jnp.dot(v, d) * d
        return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)

    def one(d, z, v):
        v = perp(v, d)

        def it(_, v):
            u = R.T @ (z * (R @ v))
            u = perp(u, d)
            return jnp.where(jnp.linalg.norm(u) > 0, u, v)

        return jax.lax.fori_loop(0, iters, it, v)

    return jax.vmap(one, in_axes=(0, 1, 0))(D, Z, v0)


def split_atoms(
    atoms: Float[ArrayLike, "n_atoms n_features"],
    X: Float[ArrayLike, "n_samples n_features"],
    codes: Float[ArrayLike, "n_samples n_atoms"],
    bias: Float[ArrayLike, " n_features"] | None,
    *,
    which: Int[ArrayLike, " n_split"] | None = None,
    eps: float = 0.1,
    key: PRNGKeyArray,
) -> tuple[Float[Array, "n_new n_features"], Int[Array, " n_new"]]:
    """Split the atoms ``which`` (default: all) into two; returns (atoms, parents).

    Atom k stays at index k as normalise(d_k + ε v_k); its sibling normalise(d_k − ε v_k) is
    appended. ``parents[j]`` is the index (in the input) each output atom descends from.
    """
    D = jnp.asarray(atoms)
    X = jnp.asarray(X, D.dtype)
    Z = jnp.asarray(codes, D.dtype)
    k = D.shape[0]
    if Z.shape != (X.shape[0], k):
        raise ValueError(f"`codes` must have shape {(X.shape[0], k)}, got {Z.shape}")
    if not eps > 0:
        raise ValueError(f"`eps` must be > 0, got {eps}")
    which = jnp.arange(k) if which is None else jnp.asarray(which, jnp.int32)
    if which.ndim != 1 or (which.size and (int(which.min()) < 0 or int(which.max()) >= k)):
        raise ValueError("`which` must be a 1-D array of atom indices")
    b = jnp.zeros(X.shape[1], D.dtype) if bias is None else jnp.asarray(bias, D.dtype)
    R = X - b - Z @ D
    V = _top_directions(D[which], Z[:, which], R, key)
    plus = normalise_rows(D[which] + eps * V)
    minus = normalise_rows(D[which] - eps * V)
    new = D.at[which].set(plus)
    out = jnp.concatenate([new, minus])
    parents = jnp.concatenate([jnp.arange(k), which]).astype(jnp.int32)
    return out, parents


def grow(fit, X, n_atoms: int, *, key: PRNGKeyArray, eps: float = 0.1):
    """Atoms for width ``n_atoms`` ≥ current width from a ``DictionaryFit``, by splitting the most
    used atoms (largest Σ_n z_nk) first; returns (atoms, parents, codes) to warm-start a fit.

    The codes are the old codes with each split atom's code shared equally by its two children.
    """
    D, Z = fit.atoms, fit.codes
    k = D.shape[0]
    if n_atoms < k:
        raise ValueError(f"`n_atoms` ({n_atoms}) is below the current width ({k})")
    extra = n_atoms - k
    order = np.argsort(-np.asarray(jnp.sum(Z, axis=0)), kind="stable")
    reps = -(-extra // k) if extra else 0
    which = np.tile(order, max(reps, 1))[:extra]
    parents = np.arange(k)
    atoms, codes = D, Z
    done = 0
    while done < extra:  # at most ceil(extra / k) rounds: a width can more than double
        chunk = which[done : done + atoms.shape[0]]
        key, sub = jax.random.split(key)
        atoms, par = split_atoms(atoms, X, codes, fit.bias, which=chunk, eps=eps, key=sub)
        par = np.asarray(par)
        codes = codes.at[:, chunk].multiply(0.5)
        codes = jnp.concatenate([codes, codes[:, chunk]], axis=1)
        parents = np.concatenate([parents, parents[par[atoms.shape[0] - len(chunk) :]]])
        done += len(chunk)
    return atoms, jnp.asarray(parents, jnp.int32), codes
