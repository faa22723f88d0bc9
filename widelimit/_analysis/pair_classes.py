"""Pair relations of features from their supports S_k = {n : z_k(n) > 0} and atom cosines.

Supports:
- nested (hierarchical): S_j ⊆ S_i with |S_j| < |S_i| — j is a child of parent i;
- exclusive: S_i ∩ S_j = ∅;
- coactive: everything else with both supports non-empty.

With atoms (c_ij = ⟨d_i, d_j⟩ of the unit atoms; overlap o_ij = |S_i ∩ S_j| / min(|S_i|, |S_j|);
missing fraction m_ij = 1 − |S_i ∩ S_j| / |S_j|, the share of the child's support where the parent
is off), the candidates that look alike in the supports are told apart:
- **split siblings** {i, j}: nearly parallel (c_ij ≥ ``sibling_cosine``) and (almost) never active
  together (o_ij ≤ ``max_overlap``): one feature whose rays were split between two atoms (what
  the dictionary does as it widens). Score c_ij·(1 − o_ij).
- **absorption** (parent i, child j): not siblings; the child's atom leans on the parent's
  (``min_cosine`` ≤ c_ij < ``sibling_cosine``: the parent direction plus its own) directly, not
  through a third atom both lean on (two children of one parent: their partial cosine given it
  falls below ``min_cosine``); the child is the rarer (|S_j| < |S_i|; the direction is a guess
  that geometry cannot settle), and the parent is off on at least ``min_missing`` of the child's
  support (fully absorbed at m = 1, partially below). Score m_ij·c_ij: how much of the child's
  support the parent lost, times how much of the parent direction the child's atom took.
Both lists are ranked by their score. Co-occurrence |S_i ∩ S_j| = BᵀB for the 0/1 support matrix
B, accumulated over row chunks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, Int

from .._core.paired_blocks import check_code_chunk
from .._core.precision import full_precision
from .hull_table import row_chunks

NONE, NESTED, EXCLUSIVE, COACTIVE = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class PairClasses:
    """``kind[i, j]`` ∈ {NONE, NESTED (j inside i), EXCLUSIVE, COACTIVE}; pair lists (M, 2).

    ``absorption`` (parent, child) rows ranked by ``absorption_score`` (with their
    ``missing_fraction``); ``siblings`` (i < j) ranked by ``sibling_score``. Both are empty
    without atoms."""

    kind: Int[np.ndarray, "width width"]
    cooccurrence: Int[np.ndarray, "width width"]
    support: Int[np.ndarray, " width"]
    nested: Int[np.ndarray, "n_nested 2"]
    exclusive: Int[np.ndarray, "n_exclusive 2"]
    absorption: Int[np.ndarray, "n_absorbed 2"]
    missing_fraction: Float[np.ndarray, " n_absorbed"]
    absorption_score: Float[np.ndarray, " n_absorbed"]
    siblings: Int[np.ndarray, "n_siblings 2"]
    sibling_score: Float[np.ndarray, " n_siblings"]


@jax.jit
def _cooc(acc, zc):
    b = (zc > 0).astype(jnp.float32)
    return acc + (b.T @ b).astype(acc.dtype)


def _direct(C, pairs, min_cosine, block=4096):
    """Mask of the pairs (i, j) whose cosine is not explained by a third atom k that both lean on:
    their partial cosine given k, (c_ij − c_ik c_jk)/√((1 − c_ik²)(1 − c_jk²)), stays ≥
    ``min_cosine`` for every such k. Two children of one parent lean on each other only through
    it ("cousins"); a parent and its child lean on each other directly."""
    keep = np.ones(len(pairs), bool)
    for s in range(0, len(pairs), block):
        i, j = pairs[s : s + block, 0], pairs[s : s + block, 1]
        ci, cj = C[i], C[j]  # (M, K)
        shared = (ci >= min_cosine) & (cj >= min_cosine)
        shared[np.arange(len(i)), i] = shared[np.arange(len(i)), j] = False
        den = np.sqrt(np.maximum((1 - ci**2) * (1 - cj**2), 1e-12))
        partial = (C[i, j][:, None] - ci * cj) / den
        keep[s : s + block] = ~np.any(shared & (partial < min_cosine), axis=1)
    return keep


@full_precision
def classify_pairs(
    codes: Float[ArrayLike, "n_samples width"],
    atoms: Float[ArrayLike, "width n_features"] | None = None,
    *,
    min_cosine: float = 0.3,
    min_missing: float = 0.1,
    sibling_cosine: float = 0.9,
    max_overlap: float = 0.1,
    chunk_rows: int = 8192,
) -> PairClasses:
    """Label ordered pairs nested / exclusive / coactive; with ``atoms``, list split siblings and
    absorption (parent, child) pairs, each ranked by its score (module docstring).

    ``codes`` may be an array, a memmap, ``SparseCodes`` or a ``CodeStore``, read in
    ``chunk_rows`` row chunks; the results are K × K (``kind``, ``cooccurrence``)."""
    if len(getattr(codes, "shape", ())) != 2:
        codes = np.asarray(codes)
    if len(codes.shape) != 2 or codes.shape[0] < 1:
        raise ValueError(f"`codes` must be a non-empty 2-D array, got shape {tuple(codes.shape)}")
    for name, v in (("min_cosine", min_cosine), ("min_missing", min_missing),
                    ("sibling_cosine", sibling_cosine), ("max_overlap", max_overlap)):  # fmt: skip
        if not (isinstance(v, (int, float)) and 0 <= v <= 1):
            raise ValueError(f"`{name}` must be a number in [0, 1], got {v!r}")
    n, k = codes.shape
    acc = jnp.zeros((k, k), jnp.int32)
    for s, zc, _ in row_chunks(codes, np.ones(n), min(chunk_rows, n)):  # zero padding adds nothing
        check_code_chunk(zc, s)
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
    pairs, empty = np.zeros((0, 2), np.int64), np.zeros((0,))
    absorption, missing, a_score, siblings, s_score = pairs, empty, empty, pairs, empty
    if atoms is not None:
        D = np.asarray(atoms, np.float64)
        if D.shape != (k, D.shape[-1]):
            raise ValueError(f"`atoms` must have {k} rows (one per code column)")
        D = D / np.linalg.norm(D, axis=1, keepdims=True)
        C = D @ D.T
        overlap = co / np.maximum(np.minimum(si, sj), 1)
        sib = both & (C >= sibling_cosine) & (overlap <= max_overlap)
        siblings = np.argwhere(np.triu(sib, 1))
        s_score = (C * (1 - overlap))[np.triu(sib, 1)]
        frac = 1 - co / np.maximum(sj, 1)  # share of S_j where i is off
        cand = both & (C >= min_cosine) & (C < sibling_cosine) & (sj < si) & (frac >= min_missing)
        absorption = np.argwhere(cand)
        absorption = absorption[_direct(C, absorption, min_cosine)]
        i, j = absorption[:, 0], absorption[:, 1]
        missing = frac[i, j]
        a_score = missing * C[i, j]
        order = np.argsort(-a_score, kind="stable")
        absorption, missing, a_score = absorption[order], missing[order], a_score[order]
        order = np.argsort(-s_score, kind="stable")
        siblings, s_score = siblings[order], s_score[order]
    return PairClasses(
        kind, co, sup, nested, exclusive, absorption, missing, a_score, siblings, s_score
    )
