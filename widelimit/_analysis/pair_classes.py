"""Pair relations of features from their supports S_k = {n : z_k(n) > 0}.

- nested (hierarchical): S_j ⊆ S_i with |S_j| < |S_i| — j is a child of parent i;
- exclusive: S_i ∩ S_j = ∅;
- coactive: everything else with both supports non-empty.
Absorption candidate (parent i, child j): the child's atom leans on the parent's
(c_ij ≥ ``min_cosine``), the child is rarer (|S_j| < |S_i|), and the parent is missing on at
least ``min_missing`` of the child's support — the child fires instead of the parent.
Co-occurrence |S_i ∩ S_j| = BᵀB for the 0/1 support matrix B, accumulated over row chunks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, Int

from .._core.precision import full_precision
from .hull_table import row_chunks

NONE, NESTED, EXCLUSIVE, COACTIVE = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class PairClasses:
    """``kind[i, j]`` ∈ {NONE, NESTED (j inside i), EXCLUSIVE, COACTIVE}; pair lists (M, 2)."""

    kind: Int[np.ndarray, "width width"]
    cooccurrence: Int[np.ndarray, "width width"]
    support: Int[np.ndarray, " width"]
    nested: Int[np.ndarray, "n_nested 2"]
    exclusive: Int[np.ndarray, "n_exclusive 2"]
    absorption: Int[np.ndarray, "n_absorbed 2"]
    missing_fraction: Float[np.ndarray, " n_absorbed"]


@jax.jit
def _cooc(acc, zc):
    b = (zc > 0).astype(jnp.float32)
    return acc + (b.T @ b).astype(acc.dtype)


@full_precision
def classify_pairs(
    codes: Float[ArrayLike, "n_samples width"],
    atoms: Float[ArrayLike, "width n_features"] | None = None,
    *,
    min_cosine: float = 0.3,
    min_missing: float = 0.1,
    chunk_rows: int = 8192,
) -> PairClasses:
    """Label ordered pairs nested / exclusive / coactive and list absorption candidates
    (these need ``atoms`` for the cosines; without atoms none are listed)."""
    if getattr(codes, "ndim", None) != 2:
        codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise ValueError(f"`codes` must be a non-empty 2-D array, got shape {tuple(codes.shape)}")
    n, k = codes.shape
    acc = jnp.zeros((k, k), jnp.int32)
    for _, zc, _ in row_chunks(codes, np.ones(n), min(chunk_rows, n)):  # zero padding adds nothing
        if not bool(jnp.isfinite(zc).all()):
            raise ValueError("`codes` contains NaN or Inf")
        if bool(jnp.any(zc < 0)):
            raise ValueError("`codes` must be nonnegative")
        acc = _cooc(acc, zc)
    co = np.asarray(acc).astype(np.int64)
    sup = np.diag(co).copy()
    si, sj = sup[:, None], sup[None, :]
    both = (si > 0) & (sj > 0) & ~np.eye(k, dtype=bool)
    kind = np.full((k, k), NONE, np.int8)
    kind[both] = COACTIVE
    kind[both & (co == 0)] = EXCLUSIVE
    kind[both & (co == sj) & (sj < si)] = NESTED
    nested = np.argwhere(kind == NESTED)
    exclusive = np.argwhere(kind == EXCLUSIVE)
    absorption = np.zeros((0, 2), np.int64)
    missing = np.zeros((0,))
    if atoms is not None:
        D = np.asarray(atoms, np.float64)
        if D.shape != (k, D.shape[-1]):
            raise ValueError(f"`atoms` must have {k} rows (one per code column)")
        D = D / np.linalg.norm(D, axis=1, keepdims=True)
        C = D @ D.T
        frac = 1 - co / np.maximum(sj, 1)  # share of S_j where i is off
        cand = both & (C >= min_cosine) & (sj < si) & (frac >= min_missing)
        absorption = np.argwhere(cand)
        missing = frac[cand]
        order = np.argsort(-missing, kind="stable")
        absorption, missing = absorption[order], missing[order]
    return PairClasses(kind, co, sup, nested, exclusive, absorption, missing)
