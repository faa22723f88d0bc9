"""One feature pair under the hull condition (SPEC §4.5), and the perturbation that breaks it.

For the ordered pair (i, j): (1 − c_ij) μ_j ∈ [lo, hi] = conv{z_j(n) : n ∈ I_i}. In the paper's
normalisation (divide by μ_j, remove 1): −c_ij ∈ conv{z_j(n)/μ_j − 1 : n ∈ I_i}. If it fails,
z_i += ε(a z_j + t), d_j −= ε a d_i (renormalised, z_j rescaled), b −= ε t d_i leaves every
reconstruction unchanged and changes L by ε λ [a (1 − c_ij) μ_j + t] + O(ε²) < 0.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core.objective import check_dictionary
from .._core.paired_blocks import check_code_chunk, check_codes_shape, code_rows
from .._core.precision import full_precision
from .._core.validate import check_matrix, check_weights
from .conditions import OptimalityReport, unit_atoms, unit_scale
from .hull_table import pair_margin


class PairHull(eqx.Module):
    """The hull test of the ordered pair (i, j); ``responses`` (N, 2) = (z_i/μ_i − 1, z_j/μ_j − 1)
    when built from codes (None from a report)."""

    i: int = eqx.field(static=True)
    j: int = eqx.field(static=True)
    lo: Float[Array, ""]
    hi: Float[Array, ""]
    target: Float[Array, ""]
    margin: Float[Array, ""]
    mu_i: Float[Array, ""]
    mu_j: Float[Array, ""]
    cosine: Float[Array, ""]
    fit_bias: bool = eqx.field(static=True)
    responses: Float[Array, "n_samples 2"] | None = None

    @property
    def violated(self) -> bool:
        return bool(self.margin < 0)

    def normalised(self):
        """(lo/μ_j − 1, hi/μ_j − 1, −c_ij): the paper's interval and target."""
        return self.lo / self.mu_j - 1, self.hi / self.mu_j - 1, -self.cosine


class Perturbation(eqx.Module):
    """z_i += ε(a z_j + t), d_j −= ε a d_i, b −= ε t d_i; dL/dε = λ·rate at ε = 0 (rate < 0)."""

    i: int = eqx.field(static=True)
    j: int = eqx.field(static=True)
    a: float = eqx.field(static=True)
    t: Float[Array, ""]
    rate: Float[Array, ""]

    def slope(self, lam: float) -> Float[Array, ""]:
        return lam * self.rate


class Perturbed(NamedTuple):
    """A dictionary after ``apply_perturbation``: unit atoms, codes, and the bias (None without)."""

    atoms: Float[Array, "width n_features"]
    codes: Float[Array, "n_samples width"]
    bias: Float[Array, " n_features"] | None


def _pair_from_codes(Z, D, w, i, j, fit_bias):
    return _pair_from_columns(Z[:, i], Z[:, j], D[i], D[j], w, i, j, fit_bias)


def _pair_from_columns(zi, zj, di, dj, w, i, j, fit_bias):
    n = jnp.sum(w)
    mu_i, mu_j = jnp.sum(w * zi) / n, jnp.sum(w * zj) / n
    c = jnp.dot(di, dj)
    target = (1 - c) * mu_j
    off = (zi <= 0) & (w > 0)
    lo = jnp.min(jnp.where(off, zj, jnp.inf))
    hi = jnp.max(jnp.where(off, zj, -jnp.inf))
    margin = pair_margin(lo, hi, target, fit_bias)
    safe = lambda m: jnp.where(m > 0, m, 1)  # noqa: E731
    resp = jnp.stack([zi / safe(mu_i) - 1, zj / safe(mu_j) - 1], axis=1)
    return PairHull(i, j, lo, hi, target, margin, mu_i, mu_j, c, fit_bias, resp)


def _pair_columns(codes, i: int, j: int, rows: int = 65536):
    """Columns i and j of codes of any kind, (N, 2) numpy, read in row chunks (each checked)."""
    n = codes.shape[0]
    ij = np.empty((n, 2), np.dtype(code_rows(codes, 0, 1).dtype))
    for s in range(0, n, rows):
        zc = code_rows(codes, s, min(n, s + rows))
        check_code_chunk(zc, s)
        ij[s : s + zc.shape[0]] = np.asarray(zc[:, jnp.array([i, j])])
    return ij


def _check_pair(i, j, k):
    for name, v in (("i", i), ("j", j)):
        if not (isinstance(v, (int, np.integer)) and 0 <= v < k):
            raise ValueError(f"`{name}` must be an atom index in [0, {k}), got {v!r}")
    if i == j:
        raise ValueError("`i` and `j` must be different atoms")
    return int(i), int(j)


@full_precision
def pair_hull(
    report_or_codes: OptimalityReport | Float[ArrayLike, "n_samples width"],
    i: int,
    j: int,
    *,
    atoms: Float[ArrayLike, "width n_features"] | None = None,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    fit_bias: bool = True,
) -> PairHull:
    """Details of the hull test for the ordered pair (i, j), from a report or from codes + atoms.

    Codes may be an array, a memmap, ``SparseCodes`` or a ``CodeStore``: only the columns i and j
    are read (in row chunks), so this gives any pair of a compact report (which keeps only the
    violated ones) in O(N) memory.
    """
    if isinstance(report_or_codes, OptimalityReport):
        r = report_or_codes
        i, j = _check_pair(i, j, r.mu.shape[0])
        mu = r.mu
        if r.compact:
            p = r.hull_pairs
            hit = np.flatnonzero((p.pairs[:, 0] == i) & (p.pairs[:, 1] == j))
            if not len(hit):
                raise ValueError(
                    f"pair ({i}, {j}) is not violated, and this report keeps only the violated "
                    "pairs (hull='violated'): pair_hull(codes, i, j, atoms=atoms) computes any pair"
                )
            lo, hi, t, m = (jnp.asarray(a[hit[0]]) for a in (p.lo, p.hi, p.target, p.margin))
        else:
            lo, hi = r.hull_lo[i, j], r.hull_hi[i, j]
            t, m = r.hull_target[i, j], r.hull_margin[i, j]
        c = 1 - t / jnp.where(mu[j] > 0, mu[j], 1)
        return PairHull(i, j, lo, hi, t, m, mu[i], mu[j], c, r.fit_bias)
    if atoms is None:
        raise ValueError("`atoms` are needed with codes (the target uses c_ij = ⟨d_i, d_j⟩)")
    codes = report_or_codes
    if hasattr(codes, "dense_rows") or isinstance(codes, np.memmap):  # read two columns only
        D = check_matrix(atoms, "atoms")
        check_codes_shape(codes, None, D.shape[0])
        i, j = _check_pair(i, j, D.shape[0])
        ij = jnp.asarray(_pair_columns(codes, i, j), D.dtype)
        D, _ = unit_scale(D, False)
        w = check_weights(weights, ij.shape[0], ij.dtype)
        return _pair_from_columns(ij[:, 0], ij[:, 1], D[i], D[j], w, i, j, fit_bias)
    Z = check_matrix(codes, "codes")
    D = check_matrix(atoms, "atoms")
    if D.shape[0] != Z.shape[1]:
        raise ValueError(f"`atoms` has {D.shape[0]} rows but `codes` has {Z.shape[1]} columns")
    D, Z = unit_atoms(D.astype(Z.dtype), Z)
    i, j = _check_pair(i, j, Z.shape[1])
    w = check_weights(weights, Z.shape[0], Z.dtype)
    return _pair_from_codes(Z, D, w, i, j, fit_bias)


def _perturbation(p: PairHull) -> Perturbation:
    if not p.violated:
        raise ValueError(
            f"pair ({p.i}, {p.j}) satisfies the hull condition (margin {float(p.margin):.3g}); "
            "no first-order perturbation in span{d_i, d_j} lowers L"
        )
    if not p.fit_bias:
        a, t = -1.0, jnp.zeros_like(p.target)
    elif not bool(jnp.isfinite(p.lo)):  # I_i empty: feature i is dense
        a, t = 0.0, -jnp.ones_like(p.target)
    elif bool(p.target < p.lo):
        a, t = 1.0, -p.lo
    else:
        a, t = -1.0, p.hi
    return Perturbation(p.i, p.j, a, t, a * p.target + t)


@full_precision
def separating_perturbation(
    report_or_codes: OptimalityReport | Float[ArrayLike, "n_samples width"],
    i: int,
    j: int,
    *,
    atoms: Float[ArrayLike, "width n_features"] | None = None,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    fit_bias: bool = True,
) -> Perturbation:
    """SPEC §4.5: target < lo → (a, t) = (1, −lo); target > hi → (−1, hi); I_i empty → (0, −1);
    without a bias (−1, 0). Raises if the pair passes."""
    p = pair_hull(report_or_codes, i, j, atoms=atoms, weights=weights, fit_bias=fit_bias)
    return _perturbation(p)


@full_precision
def apply_perturbation(
    X: Float[ArrayLike, "n_samples n_features"],
    atoms: Float[ArrayLike, "width n_features"],
    codes: Float[ArrayLike, "n_samples width"],
    bias: Float[ArrayLike, " n_features"] | None,
    lam: float,
    i: int,
    j: int,
    eps: float,
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
) -> Perturbed:
    """``Perturbed(atoms, codes, bias)`` after the separating perturbation of (i, j), step ε > 0.

    Reconstructions are unchanged (up to clipping z_i at 0 where z_i(n) < ε|a z_j + t|), so
    L(ε) − L(0) = ελ·rate + O(ε²). ``lam`` is checked but only enters through the slope.
    """
    fit_bias = bias is not None
    X, D, Z, b = check_dictionary(X, atoms, codes, bias)
    del lam
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"`eps` must be a finite positive step, got {eps!r}")
    w = check_weights(weights, X.shape[0], X.dtype)
    D, Z = unit_atoms(D, Z)
    i, j = _check_pair(i, j, Z.shape[1])
    pert = _perturbation(_pair_from_codes(Z, D, w, i, j, fit_bias))
    a, t = pert.a, pert.t
    Z = Z.at[:, i].set(jnp.maximum(Z[:, i] + eps * (a * Z[:, j] + t), 0))
    dj = D[j] - eps * a * D[i]
    nj = jnp.linalg.norm(dj)
    D = D.at[j].set(dj / nj)
    Z = Z.at[:, j].multiply(nj)
    b = b - eps * t * D[i]
    return Perturbed(D, Z, b if fit_bias else None)
