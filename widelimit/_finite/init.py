"""Data-based initial atoms: weighted spherical k-means of the data directions (host numpy)."""

from __future__ import annotations

import jax
import numpy as np

from .._core.validate import to_device


def data_init(X, b, width: int, key, max_rows: int = 16384, rounds: int = 32, lloyd: int = 2):
    """Atoms for weighted spherical k-means of the data directions u_n = (x_n − b)/‖x_n − b‖,
    weights e_n = ‖x_n − b‖²: maximise Σ_n e_n max_k ⟨u_n, d_k⟩ (on a row subsample of at most
    ``max_rows``). Seeding by k-means++: atoms drawn with probability ∝ e_n (1 − max_k ⟨u_n, d_k⟩),
    without replacement, in ``rounds`` rounds of ⌈width/rounds⌉ (one per round, exact
    k-means++, when width ≤ rounds). Then ``lloyd`` Lloyd steps: each direction to its nearest
    atom, each atom to normalise(Σ e_n u_n) over its directions (kept where it has none). Plus 1e-3
    Gaussian noise, normalised. On the K = 1024 benchmark two Lloyd steps (0.1 s) reach
    scikit-learn's objective in 3 epochs instead of 5.

    Runs in numpy on the host (a few ``max_rows`` × d × K products) with a generator seeded from
    ``key``: compiling the loop took 0.4 s, ten times its run time."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    dtype = np.dtype(X.dtype)
    n = X.shape[0]
    if n > max_rows:
        X = X[np.sort(rng.choice(n, max_rows, replace=False))]
    P = np.asarray(X, dtype) - np.asarray(b, dtype)
    energy = np.einsum("nd,nd->n", P, P)
    U = P / np.sqrt(np.where(energy > 0, energy, 1))[:, None]
    rounds = min(width, rounds)
    m = min(-(-width // rounds), U.shape[0])
    D = np.zeros((-(-width // m) * m, X.shape[1]), dtype)
    best = np.full(U.shape[0], -1.0, dtype)
    with np.errstate(divide="ignore"):
        for i in range(0, width, m):
            p = energy * np.clip(1 - best, 0, None)
            p = p if p.sum() > 0 else np.ones_like(p)  # all covered: uniform
            score = np.log(p) + rng.gumbel(size=p.shape)  # m draws ∝ p without replacement
            idx = np.argpartition(-score, m - 1)[:m]
            D[i : i + m] = U[idx]
            best = np.maximum(best, (U @ U[idx].T).max(axis=1))
    D = D[:width]
    for _ in range(lloyd):
        D = _lloyd_step(U, energy, D)
    noise = (1e-3 * rng.standard_normal(D.shape)).astype(dtype)
    D = np.where(np.linalg.norm(D, axis=1, keepdims=True) > 0, D, noise) + noise
    return to_device(D / np.linalg.norm(D, axis=1, keepdims=True), dtype)


def _lloyd_step(U, energy, D, chunk: int = 4096):
    """One Lloyd step of weighted spherical k-means: d_k ← normalise(Σ_{n: k(n) = k} e_n u_n),
    k(n) = argmax_k ⟨u_n, d_k⟩ (assigned ``chunk`` rows at a time); atoms with no row are kept."""
    near = np.concatenate(
        [(U[i : i + chunk] @ D.T).argmax(axis=1) for i in range(0, len(U), chunk)]
    )
    order = np.argsort(near, kind="stable")
    k = near[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    C = np.zeros_like(D)
    C[k[starts]] = np.add.reduceat((U * energy[:, None])[order], starts, axis=0)
    norm = np.linalg.norm(C, axis=1, keepdims=True)
    return np.where(norm > 0, C / np.where(norm > 0, norm, 1), D)
