"""Growing a dictionary by splitting atoms (SPEC §3): the warm start of a width sweep.

Atom k is split into normalise(d_k ± ε v_k), v_k the top principal direction (orthogonal to d_k) of
the residuals of the points that use it, weighted by their codes: C_k = Σ_n z_nk r_n r_nᵀ. All top
directions come from one batched power iteration (vmap over atoms).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core.precision import full_precision
from .atoms import normalise_rows


class Split(NamedTuple):
    """Atoms after ``split_atoms``; ``parents[j]`` is the input atom that atom j descends from."""

    atoms: Float[Array, "n_new n_features"]
    parents: Int[Array, " n_new"]


class Grown(NamedTuple):
    """A warm start for ``fit_dictionary`` from ``grow``: atoms, their parents, codes for them."""

    atoms: Float[Array, "width n_features"]
    parents: Int[Array, " width"]
    codes: Float[Array, "n_samples width"]


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


@full_precision
def split_atoms(
    atoms: Float[ArrayLike, "width n_features"],
    X: Float[ArrayLike, "n_samples n_features"],
    codes: Float[ArrayLike, "n_samples width"],
    bias: Float[ArrayLike, " n_features"] | None,
    *,
    which: Int[ArrayLike, " n_split"] | None = None,
    eps: float = 0.1,
    key: PRNGKeyArray,
) -> Split:
    """Split the atoms ``which`` (default: all) into two; returns ``Split(atoms, parents)``.

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
    return Split(out, parents)


@partial(jax.jit, static_argnames="m")
def _residuals_and_candidates(X, b, Z, D, m: int):
    """(residuals R = X − b − Z D, the m rows of largest ||r_n||, largest first)."""
    R = X - b - Z @ D
    return R, jnp.argsort(-jnp.linalg.norm(R, axis=1))[:m]


@partial(jax.jit, static_argnames="m")
def _greedy_new_atoms(R, Z, lam, cand, m: int):
    """m new atoms, greedily: each is the candidate direction u (a normalised residual) not yet
    taken with the largest gain G(u) = Σ_n max(0, ⟨u, r_n⟩ − λ)² (the first-order drop of 2N·L
    when u joins with fresh codes), after which its part p_n = max(0, ⟨u, r_n⟩ − λ) is removed
    from the residuals. A taken direction is not chosen again (its gain can grow back as other
    parts are removed, but a second copy of an atom is no new atom): once all are taken the gain
    is −1.
    Its parent is the atom whose points supply most of that gain, Σ_n p_n² [z_nk > 0] (−1 when
    uncoded points do).

    The scan keeps the correlations C = R Uᵀ (N × candidates), not R: removing p u from the
    residuals is C ← C − p (U u)ᵀ, O(N·candidates) a step instead of the O(N·candidates·d) of
    recomputing R Uᵀ; the parents are one product P² [Z > 0] after the scan (at N = 8000,
    K = 4096 → 8192 the per-step products took about 100 s of a width sweep's step)."""
    U = R[cand]
    U = U / jnp.maximum(jnp.linalg.norm(U, axis=1, keepdims=True), jnp.finfo(R.dtype).tiny)
    UU = U @ U.T

    def step(carry, _):
        C, taken = carry
        G = jnp.where(taken, -1.0, jnp.sum(jnp.maximum(C - lam, 0) ** 2, axis=0))
        best = jnp.argmax(G)
        p = jnp.where(G[best] >= 0, jnp.maximum(C[:, best] - lam, 0), 0)
        C = C - p[:, None] * UU[best][None, :]
        return (C, taken.at[best].set(True)), (best, G[best], p)

    taken0 = jnp.zeros(U.shape[0], bool)
    _, (best, gain, P) = jax.lax.scan(step, (R @ U.T, taken0), None, length=m)
    coded = (Z > 0).astype(R.dtype)
    P2 = P * P
    by_atom = P2 @ coded
    by_none = P2 @ (1 - jnp.max(coded, axis=1, initial=0))
    parent = jnp.where(
        jnp.max(by_atom, axis=1, initial=0) >= by_none, jnp.argmax(by_atom, axis=1), -1
    )
    return U[best], parent, gain, P


def _ray_atoms(R, Z, taken, lam, m: int):
    """Up to m atoms r_n/‖r_n‖ at the points with the largest residuals ‖r_n‖ > λ (the wide
    limit's atoms of the rays still off its certificate), each a direction not yet among ``taken``
    or the earlier choices (duplicate points give one atom). Returns the atoms, their points and
    parents (the atom each point uses most; −1 when it is uncoded)."""
    norms = np.asarray(jnp.linalg.norm(R, axis=1))
    order = np.argsort(-norms, kind="stable")
    order = order[norms[order] > float(lam)][: 2 * m]
    if order.size == 0:
        return R[:0], np.zeros(0, np.int64), np.zeros(0, np.int64)
    U = np.asarray(R[order] / norms[order, None])
    tol = 1 - np.sqrt(np.finfo(U.dtype).eps)
    new = np.max(U @ np.asarray(taken).T, axis=1, initial=-1) < tol
    cos = U @ U.T
    keep = []
    for i in np.flatnonzero(new):  # greedy dedup among ≤ 2m candidates, O(m) vector checks
        if not keep or cos[i, keep].max() < tol:
            keep.append(i)
            if len(keep) == m:
                break
    own = order[keep]
    z = np.asarray(Z[own])
    return jnp.asarray(U[keep]), own, np.where(z.max(axis=1, initial=0) > 0, z.argmax(axis=1), -1)


@full_precision
def grow(
    fit, X, width: int, *, key: PRNGKeyArray, eps: float = 0.1, candidates: int = 256
) -> Grown:
    """Atoms for width ``width`` ≥ current width from a ``DictionaryFit``: returns
    ``Grown(atoms, parents, codes)`` to warm-start ``fit_dictionary``.

    New atoms go where the wide certificate fails (‖r_n‖ > λ: a new atom lowers L): each is the
    normalised residual (of the ``candidates`` largest) with the largest first-order gain, and its
    parent is the atom whose points it takes over — a split of that feature. Once the candidates
    are spent, the points with the largest residuals left (‖r_n‖ > λ) each get the atom
    r_n/‖r_n‖, as in the wide limit, parented by the atom the point uses most. When no point
    wants a new atom any more, the most used atoms are split ± ε along their top residual
    direction.
    """
    D, Z = fit.atoms, fit.codes
    X = jnp.asarray(X, D.dtype)
    k = D.shape[0]
    if width < k:
        raise ValueError(f"`width` ({width}) is below the current width ({k})")
    extra = width - k
    if extra == 0:
        return Grown(D, jnp.arange(k, dtype=jnp.int32), Z)
    R, cand = _residuals_and_candidates(X, fit.bias, Z, D, min(candidates, X.shape[0]))
    U, par, gain, P = _greedy_new_atoms(R, Z, fit.lam, cand, extra)
    # a chosen direction's own gain is then 0, up to rounding: a gain within √eps of the largest
    # is that rounding (it re-chose a direction already taken), not a new atom
    gain = np.asarray(gain)
    useful = gain > np.sqrt(np.finfo(gain.dtype).eps) * max(float(gain.max(initial=0)), 0.0)
    atoms = jnp.concatenate([D, U[useful]])
    codes = jnp.concatenate([Z, P[useful].T], axis=1)
    parents = np.concatenate([np.arange(k), np.asarray(par)[useful]])
    rest = extra - int(useful.sum())
    if rest:  # the candidates are spent: each point still off the certificate gets its own atom
        R = R - P[useful].T @ U[useful]
        U2, own, par2 = _ray_atoms(R, Z, atoms, fit.lam, rest)
        atoms = jnp.concatenate([atoms, U2])
        fresh = jnp.zeros((X.shape[0], len(own)), D.dtype)
        fresh = fresh.at[own, jnp.arange(len(own))].set(jnp.linalg.norm(R[own], axis=1) - fit.lam)
        codes = jnp.concatenate([codes, fresh], axis=1)
        parents = np.concatenate([parents, par2])
        rest -= len(own)
    if rest:  # no point wants a new atom any more: split the most used atoms
        order = np.argsort(-np.asarray(jnp.sum(codes, axis=0)), kind="stable")
        which = np.tile(order, -(-rest // len(order)))[:rest]
        atoms, par2 = split_atoms(atoms, X, codes, fit.bias, which=which, eps=eps, key=key)
        codes = codes.at[:, which].multiply(0.5)
        codes = jnp.concatenate([codes, codes[:, which]], axis=1)
        parents = np.concatenate([parents, parents[np.asarray(par2)[-rest:]]])
    return Grown(atoms, jnp.asarray(parents, jnp.int32), codes)
