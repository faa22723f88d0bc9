"""First-order optimality conditions of a dictionary (SPEC §4), as one ``OptimalityReport``.

With r_n = x_n − b − D z_n, c_ij = ⟨d_i, d_j⟩, μ_j = (1/N) Σ w_n z_j(n), I_i = {n : z_i(n) = 0}:
1. codes: ⟨d_i, r_n⟩ = λ where z_i(n) > 0, ≤ λ where z_i(n) = 0;
2. atoms: Σ_n w_n z_i(n) r_n = λ (Σ_n w_n z_i(n)) d_i (its part ⟂ d_i is what the atom fails to absorb);
3. bias: Σ_n w_n r_n = 0;
4. wide certificate: max_n ||r_n|| ≤ λ;
5. feature–feature hull: (1 − c_ij) μ_j ∈ [lo_ij, hi_ij] = conv{z_j(n) : n ∈ I_i} for every ordered
   pair (I_i empty fails with a bias; without a bias: fails iff no n ∈ I_i has z_j(n) > 0).
The hull bounds come from ``hull_table`` (top activations + sparse supports, never N × K × K).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._core.objective import (
    check_dictionary,
    densify,
    is_out_of_core,
    streamed_dictionary,
    streamed_sums_of,
)
from .._core.precision import full_precision
from .._core.stationarity import first_order_from_sums, first_order_residuals
from .._core.validate import check_lam, check_weights
from .._sae.base import AbstractSAE
from .hull_table import dense_hull_table, hull_table


def hull_severity(margin, mu):
    """−margin_ij/μ_j: how far (1 − c_ij) μ_j lies outside its hull, relative to μ_j (a pair is
    violated when this exceeds tol)."""
    return -margin / jnp.where(mu > 0, mu, 1)[None, :]


class OptimalityReport(eqx.Module):
    """Per-condition diagnostics of (atoms, codes, bias) at λ; ``passed`` if all hold within tol."""

    passed: Bool[Array, ""]
    code_kkt_max: Float[Array, ""]
    code_kkt_per_atom: Float[Array, " width"]
    atom_stationarity: Float[Array, " width"]
    unabsorbed_direction: Float[Array, "width n_features"]
    bias_residual: Float[Array, ""]
    wide_certificate: Float[Array, ""]
    wants_new_atom: Bool[Array, " n_samples"]
    hull_lo: Float[Array, "width width"]
    hull_hi: Float[Array, "width width"]
    hull_target: Float[Array, "width width"]
    hull_margin: Float[Array, "width width"]
    mu: Float[Array, " width"]
    hull_violated: Bool[Array, "width width"]
    tol: float = eqx.field(static=True)
    fit_bias: bool = eqx.field(static=True)

    def hull_severity(self) -> Float[Array, "width width"]:
        """``hull_severity`` of this report's margins."""
        return hull_severity(self.hull_margin, self.mu)

    @property
    def violated_pairs(self) -> Int[np.ndarray, "n_violated 2"]:
        """The ordered pairs (i, j) that fail the hull condition, worst first (eager only)."""
        bad = np.argwhere(np.asarray(self.hull_violated))
        sev = np.asarray(self.hull_severity())[bad[:, 0], bad[:, 1]]
        return bad[np.argsort(-sev, kind="stable")].astype(np.int64).reshape(-1, 2)

    def summary(self) -> str:
        ok = lambda b: "ok " if b else "FAIL"  # noqa: E731
        t = self.tol
        lines = [
            f"optimality report: {'PASSED' if bool(self.passed) else 'NOT a local optimum'}",
            f"  [{ok(float(self.code_kkt_max) <= t)}] codes (KKT): worst violation {float(self.code_kkt_max):.3g}·λ",
            f"  [{ok(float(jnp.max(self.atom_stationarity, initial=0)) <= t)}] atoms (mop-up): worst "
            f"unabsorbed residual {float(jnp.max(self.atom_stationarity, initial=0)):.3g} (relative to λΣz)",
        ]
        if self.fit_bias:
            lines.append(
                f"  [{ok(float(self.bias_residual) <= t)}] bias: ||Σ w r||/(Nλ) = {float(self.bias_residual):.3g}"
            )
        lines.append(
            f"  [{ok(float(self.wide_certificate) <= 1 + t)}] wide certificate: max ||r_n||/λ = "
            f"{float(self.wide_certificate):.3g} ({int(self.wants_new_atom.sum())} points want a new atom)"
        )
        v = self.violated_pairs
        lines.append(f"  [{ok(len(v) == 0)}] feature–feature hull: {len(v)} violated ordered pairs")
        for i, j in v[:5]:
            lines.append(
                f"      ({i}, {j}): target {float(self.hull_target[i, j]):.3g} outside "
                f"[{float(self.hull_lo[i, j]):.3g}, {float(self.hull_hi[i, j]):.3g}]"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def unit_scale(D, normalise: bool):
    """(unit atoms, the norms the codes are multiplied by, or None) for concrete atoms D:
    ValueError for atoms off unit norm without ``normalise``, or zero rows with it."""
    norms = jnp.linalg.norm(D, axis=1)
    if not bool(jnp.any(jnp.abs(norms - 1) > 1e-4)):
        return D, None
    if not normalise:
        raise ValueError(
            "`atoms` are not unit-norm (norms in "
            f"[{float(norms.min()):.4g}, {float(norms.max()):.4g}]); pass normalise=True to "
            "rescale atoms to unit norm and codes equivalently (z_k ← z_k·||d_k||)"
        )
    if bool(jnp.any(norms == 0)):
        raise ValueError("`atoms` has zero rows; they cannot be normalised")
    return D / norms[:, None], norms


def unit_atoms(D, Z, normalise: bool = False):
    """(D, Z) checked for unit atom rows (or, with ``normalise``, rescaled to them with codes
    z_k ← z_k·||d_k|| so that D z is unchanged) and nonnegative codes; ValueError otherwise
    (``eqx.error_if`` when traced)."""
    norms = jnp.linalg.norm(D, axis=1)
    off_unit = jnp.any(jnp.abs(norms - 1) > 1e-4)
    if isinstance(off_unit, jax.core.Tracer):
        if normalise:
            D = eqx.error_if(D, off_unit & jnp.any(norms == 0), "`atoms` has zero rows")
            scale = jnp.where(off_unit, norms, 1)
            D, Z = D / scale[:, None], Z * scale[None, :]
        else:
            D = eqx.error_if(D, off_unit, "`atoms` are not unit-norm; pass normalise=True")
        return D, eqx.error_if(Z, jnp.any(Z < 0), "`codes` must be nonnegative")
    D, scale = unit_scale(D, normalise)
    if scale is not None:
        Z = Z * scale[None, :]
    if bool(jnp.any(Z < 0)):
        raise ValueError("`codes` must be nonnegative")
    return D, Z


@full_precision
def check_optimality(
    X: Float[ArrayLike, "n_samples n_features"],
    atoms,
    codes: Float[ArrayLike, "n_samples width"] | None = None,
    bias: Float[ArrayLike, " n_features"] | None = None,
    lam: float | None = None,
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    tol: float = 1e-3,
    normalise: bool = False,
    devices=None,
):
    """Check conditions 1–5 of SPEC §4 on any dictionary (``bias=None``: no bias), or judge an SAE.

    Dictionary: atoms must have unit rows (``normalise=True`` rescales them and the codes
    equivalently) and codes must be ≥ 0. ``tol`` is relative: KKT and stationarity in units of λ;
    a hull pair is violated when its margin < −tol·μ_j. Returns an ``OptimalityReport``.

    X may be an ``ActivationStore`` (or anything it reads: a ``.npy``/``.safetensors`` file or a
    directory of shards) and codes ``SparseCodes`` or a ``CodeStore``: conditions 1–4 are then
    summed block by block and the hull table read in row chunks, in O(block × width + width²)
    memory, with the results of the in-memory check. ``devices`` (``"all"`` or a list) splits the
    rows of each block over devices (conditions 1–4; the hull table runs on the default device).

    SAE (``check_optimality(X, sae, lam=...)``, any widelimit SAE): returns ``check_sae``'s
    ``SAEReport``, which says per condition whether it applies to the architecture; ``lam``
    defaults to the λ the SAE's codes imply.
    """
    if isinstance(atoms, AbstractSAE):
        from .sae_report import check_sae

        if codes is not None or bias is not None or weights is not None:
            raise TypeError(
                "an SAE brings its own codes and bias: check_optimality(X, sae, lam=...)"
            )
        return check_sae(atoms, X, lam, tol=tol)
    if codes is None or lam is None:
        raise TypeError("check_optimality(X, atoms, codes, bias, lam) needs codes and lam")
    fit_bias = bias is not None
    if is_out_of_core(X, codes) or devices is not None:
        return _streamed_report(X, atoms, codes, bias, lam, weights, tol, normalise, devices)
    X, D, Z, b = check_dictionary(X, atoms, densify(codes), bias)
    lam = check_lam(lam, X.dtype)
    w = check_weights(weights, X.shape[0], X.dtype)
    D, Z = unit_atoms(D, Z, normalise)
    return dictionary_report(X, D, Z, b, lam, w, tol, fit_bias)


def _streamed_report(
    X, atoms, codes, bias, lam, weights, tol, normalise, devices=None
) -> OptimalityReport:
    """``check_optimality`` block by block (X a store, codes sparse or on disk)."""
    fit_bias = bias is not None
    store, D, codes, b = streamed_dictionary(X, atoms, codes, bias)
    lam = check_lam(lam, D.dtype)
    D, scale = unit_scale(D, normalise)
    sums, wants = streamed_sums_of(
        store, D, codes, b, lam, weights, scale, wants=True, devices=devices
    )
    kkt, kkt_k, stat, direction, bres, wide = first_order_from_sums(sums, D, lam, fit_bias)
    w = store.weights if weights is None else weights
    table = hull_table(codes, D, weights=w, fit_bias=fit_bias)
    if scale is not None:  # codes z_j·||d_j||: lo, hi, μ, target and margin scale with column j
        table = eqx.tree_at(
            lambda t: (t.lo, t.hi, t.target, t.margin, t.mu),
            table,
            (
                table.lo * scale[None, :],
                table.hi * scale[None, :],
                table.target * scale[None, :],
                table.margin * scale[None, :],
                table.mu * scale,
            ),
        )
    return _report(
        kkt, kkt_k, stat, direction, bres, wide, jnp.asarray(wants), table, tol, fit_bias
    )


def dictionary_report(X, D, Z, b, lam, w, tol: float, fit_bias: bool = True) -> OptimalityReport:
    """``check_optimality`` on checked inputs: unit atoms D, codes Z ≥ 0, bias b, weights w."""
    kkt, kkt_k, stat, direction, bres, wide, wants = first_order_residuals(
        X, D, Z, b, lam, w, fit_bias
    )
    if isinstance(Z, jax.core.Tracer) or isinstance(w, jax.core.Tracer):
        table = dense_hull_table(Z, D, w, fit_bias)
    else:
        table = hull_table(Z, D, weights=np.asarray(w), fit_bias=fit_bias)
    return _report(kkt, kkt_k, stat, direction, bres, wide, wants, table, tol, fit_bias)


def _report(
    kkt, kkt_k, stat, direction, bres, wide, wants, table, tol, fit_bias
) -> OptimalityReport:
    """The ``OptimalityReport`` of the first-order residuals and the hull table."""
    margin, mu = table.margin, table.mu
    violated = hull_severity(margin, mu) > tol
    passed = (kkt <= tol) & (jnp.max(stat, initial=0.0) <= tol) & ~jnp.any(violated)
    if fit_bias:
        passed = passed & (bres <= tol)
    return OptimalityReport(
        passed,
        kkt,
        kkt_k,
        stat,
        direction,
        bres,
        wide,
        wants,
        table.lo,
        table.hi,
        table.target,
        margin,
        mu,
        violated,
        tol,
        fit_bias,
    )
