"""First-order optimality conditions of a dictionary (SPEC §4), as one ``OptimalityReport``.

With r_n = x_n − b − D z_n, c_ij = ⟨d_i, d_j⟩, μ_j = (1/N) Σ w_n z_j(n), I_i = {n : z_i(n) = 0}:
1. codes: ⟨d_i, r_n⟩ = λ where z_i(n) > 0, ≤ λ where z_i(n) = 0;
2. atoms: Σ_n w_n z_i(n) r_n = λ (Σ_n w_n z_i(n)) d_i (its part ⟂ d_i is what the atom fails to absorb);
3. bias: Σ_n w_n r_n = 0;
4. wide certificate: max_n ||r_n|| ≤ λ;
5. feature–feature hull: (1 − c_ij) μ_j ∈ [lo_ij, hi_ij] = conv{z_j(n) : n ∈ I_i} for every ordered
   pair (I_i empty fails with a bias; without a bias: fails iff no n ∈ I_i has z_j(n) > 0).
The hull bounds come from ``hull_table`` (top activations + sparse supports, never N × K × K).
Above ``FULL_HULL_MAX`` atoms the report keeps only the violated pairs (``HullPairs``) and per-atom
counts instead of K × K arrays; ``pair_hull(codes, i, j, atoms=...)`` gives any pair.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._core.devices import placement
from .._core.objective import (
    check_dictionary,
    densify,
    is_out_of_core,
    streamed_dictionary,
    streamed_sums_of,
)
from .._core.precision import full_precision
from .._core.row_buckets import cut_rows, pad_rows, padded_rows
from .._core.stationarity import first_order_from_sums, first_order_residuals
from .._core.validate import any_negative, check_lam, check_weights, to_device
from .._sae.base import AbstractSAE
from .hull_table import HullPairs, dense_hull_table, hull_table

FULL_HULL_MAX = 4096  # hull="auto": K × K hull arrays up to this width, violated pairs above


@jax.jit
def hull_severity(margin, mu):
    """−margin_ij/μ_j: how far (1 − c_ij) μ_j lies outside its hull, relative to μ_j (a pair is
    violated when this exceeds tol)."""
    return -margin / jnp.where(mu > 0, mu, 1)[None, :]


class OptimalityReport(eqx.Module):
    """Per-condition diagnostics of (atoms, codes, bias) at λ; ``passed`` if all hold within tol.

    The hull condition is either K × K arrays (``hull_lo`` … ``hull_violated``) or, in a compact
    report (``hull="violated"``), ``hull_pairs``: the violated pairs only, with the K × K fields None.
    """

    passed: Bool[Array, ""]
    code_kkt_max: Float[Array, ""]
    code_kkt_per_atom: Float[Array, " width"]
    atom_stationarity: Float[Array, " width"]
    unabsorbed_direction: Float[Array, "width n_features"]
    bias_residual: Float[Array, ""]
    wide_certificate: Float[Array, ""]
    wants_new_atom: Bool[Array, " n_samples"]
    hull_lo: Float[Array, "width width"] | None
    hull_hi: Float[Array, "width width"] | None
    hull_target: Float[Array, "width width"] | None
    hull_margin: Float[Array, "width width"] | None
    mu: Float[Array, " width"]
    hull_violated: Bool[Array, "width width"] | None
    tol: float = eqx.field(static=True)
    fit_bias: bool = eqx.field(static=True)
    hull_pairs: HullPairs | None = None

    @property
    def compact(self) -> bool:
        """Whether the report keeps only the violated hull pairs (no K × K arrays)."""
        return self.hull_pairs is not None

    def hull_severity(self) -> Float[Array, "width width"]:
        """``hull_severity`` of this report's margins (K × K; a compact report has only
        ``hull_pairs.severity``)."""
        if self.compact:
            raise ValueError(
                "this report keeps only the violated hull pairs (hull='violated'): see "
                "report.hull_pairs, or pass hull='full' to check_optimality for K × K arrays"
            )
        return hull_severity(self.hull_margin, self.mu)

    @property
    def violated_pairs(self) -> Int[np.ndarray, "n_violated 2"]:
        """The ordered pairs (i, j) that fail the hull condition, worst first (eager only)."""
        if self.compact:
            return self.hull_pairs.pairs
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
        for n, (i, j) in enumerate(v[:5]):
            if self.compact:
                p = self.hull_pairs
                t, lo, hi = p.target[n], p.lo[n], p.hi[n]
            else:
                t, lo, hi = self.hull_target[i, j], self.hull_lo[i, j], self.hull_hi[i, j]
            lines.append(
                f"      ({i}, {j}): target {float(t):.3g} outside [{float(lo):.3g}, {float(hi):.3g}]"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def unit_scale(D, normalise: bool, norms=None):
    """(unit atoms, the norms the codes are multiplied by, or None) for concrete atoms D (their
    row ``norms`` when known): ValueError for atoms off unit norm without ``normalise``, or zero
    rows with it."""
    norms = np.asarray(_row_norms(D) if norms is None else norms)  # K numbers, on the host
    if not np.any(np.abs(norms - 1) > 1e-4):
        return D, None
    if not normalise:
        raise ValueError(
            "`atoms` are not unit-norm (norms in "
            f"[{float(norms.min()):.4g}, {float(norms.max()):.4g}]); pass normalise=True to "
            "rescale atoms to unit norm and codes equivalently (z_k ← z_k·||d_k||)"
        )
    if np.any(norms == 0):
        raise ValueError("`atoms` has zero rows; they cannot be normalised")
    norms = to_device(norms, D.dtype)
    return _divide_rows(D, norms), norms


_row_norms = jax.jit(lambda D: jnp.linalg.norm(D, axis=1))
_divide_rows = jax.jit(lambda D, s: D / s[:, None])
_scale_columns = jax.jit(lambda Z, s: Z * s[None, :])


def unit_atoms(D, Z, normalise: bool = False):
    """(D, Z) checked for unit atom rows (or, with ``normalise``, rescaled to them with codes
    z_k ← z_k·||d_k|| so that D z is unchanged) and nonnegative codes; ValueError otherwise
    (``eqx.error_if`` when traced)."""
    norms = _row_norms(D)  # a tracer inside a caller's trace, also for captured constants
    if isinstance(norms, jax.core.Tracer) or isinstance(Z, jax.core.Tracer):
        off_unit = jnp.any(jnp.abs(norms - 1) > 1e-4)
        if normalise:
            D = eqx.error_if(D, off_unit & jnp.any(norms == 0), "`atoms` has zero rows")
            scale = jnp.where(off_unit, norms, 1)
            D, Z = D / scale[:, None], Z * scale[None, :]
        else:
            D = eqx.error_if(D, off_unit, "`atoms` are not unit-norm; pass normalise=True")
        return D, eqx.error_if(Z, jnp.any(Z < 0), "`codes` must be nonnegative")
    D, scale = unit_scale(D, normalise, norms)
    if scale is not None:
        Z = _scale_columns(Z, scale)
    if any_negative(Z):
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
    shard: str = "rows",
    hull: str = "auto",
):
    """Check conditions 1–5 of SPEC §4 on any dictionary (``bias=None``: no bias), or judge an SAE.

    Dictionary: atoms must have unit rows (``normalise=True`` rescales them and the codes
    equivalently) and codes must be ≥ 0. ``tol`` is relative: KKT and stationarity in units of λ;
    a hull pair is violated when its margin < −tol·μ_j. Returns an ``OptimalityReport``.

    X may be an ``ActivationStore`` (or anything it reads: a ``.npy``/``.safetensors`` file or a
    directory of shards) and codes ``SparseCodes`` or a ``CodeStore``: conditions 1–4 are then
    summed block by block and the hull table read in row chunks, in O(block × width + width²)
    memory, with the results of the in-memory check. ``devices`` (``"all"`` or a list) splits the
    rows of each block over devices, or with ``shard="atoms"`` the atoms and code columns
    (conditions 1–4; the hull table runs on the default device).

    ``hull``: ``"full"`` keeps the K × K hull arrays, ``"violated"`` only the violated pairs and
    per-atom counts (``report.hull_pairs``; no K × K array is held, for widths where K² numbers
    do not fit), ``"auto"`` (default) the first up to ``FULL_HULL_MAX`` = 4096 atoms, the second
    above. Inside a caller's ``jit``/``vmap`` the report is always full.

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
    if hull not in ("auto", "full", "violated"):
        raise ValueError(f"`hull` must be 'auto', 'full' or 'violated', got {hull!r}")
    fit_bias = bias is not None
    placement(devices, shard)  # ValueError for a bad `shard`, or "atoms" without devices
    if is_out_of_core(X, codes) or devices is not None:
        return _streamed_report(
            X, atoms, codes, bias, lam, weights, tol, normalise, devices, hull, shard
        )
    X, D, Z, b = check_dictionary(X, atoms, densify(codes), bias)
    lam = check_lam(lam, X.dtype)
    n = X.shape[0]
    w = check_weights(weights, n, X.dtype)
    # small inputs padded to a row bucket by copies of row 0 of weight 0 (``row_buckets``: a new N
    # compiles nothing): every sum is weighted, every max over rows repeats row 0 or skips w = 0
    nb = padded_rows(X, Z, w, width=D.shape[0])
    if nb is not None:
        X, Z, w = pad_rows(X, nb), pad_rows(Z, nb), pad_rows(w, nb, fill=0)
    D, Z = unit_atoms(D, Z, normalise)
    report = dictionary_report(X, D, Z, b, lam, w, tol, fit_bias, hull)
    if nb is None:
        return report
    return eqx.tree_at(lambda r: r.wants_new_atom, report, cut_rows(report.wants_new_atom, n))


def _compact(hull: str, width: int) -> bool:
    return hull == "violated" or (hull == "auto" and width > FULL_HULL_MAX)


def _streamed_report(
    X, atoms, codes, bias, lam, weights, tol, normalise, devices=None, hull="auto", shard="rows"
) -> OptimalityReport:
    """``check_optimality`` block by block (X a store, codes sparse or on disk)."""
    fit_bias = bias is not None
    store, D, codes, b = streamed_dictionary(X, atoms, codes, bias)
    lam = check_lam(lam, D.dtype)
    D, scale = unit_scale(D, normalise)
    sums, wants = streamed_sums_of(
        store, D, codes, b, lam, weights, scale, wants=True, devices=devices, shard=shard
    )
    kkt, kkt_k, stat, direction, bres, wide = first_order_from_sums(sums, D, lam, fit_bias)
    w = store.weights if weights is None else weights
    compact = _compact(hull, D.shape[0])
    table = hull_table(
        codes, D, weights=w, fit_bias=fit_bias, violated_only=tol if compact else None
    )
    if scale is not None:  # codes z_j·||d_j||: lo, hi, μ, target and margin scale with column j
        s = np.asarray(scale)  # (the severity −margin/μ_j is scale-free)
        col = s[table.pairs[:, 1]] if compact else s[None, :]  # per violated pair, or per column
        table = eqx.tree_at(
            lambda t: (t.lo, t.hi, t.target, t.margin, t.mu),
            table,
            (table.lo * col, table.hi * col, table.target * col, table.margin * col,
             table.mu * s),
        )  # fmt: skip
    return _report(
        kkt, kkt_k, stat, direction, bres, wide, jnp.asarray(wants), table, tol, fit_bias
    )


def dictionary_report(
    X, D, Z, b, lam, w, tol: float, fit_bias: bool = True, hull: str = "auto"
) -> OptimalityReport:
    """``check_optimality`` on checked inputs: unit atoms D, codes Z ≥ 0, bias b, weights w."""
    kkt, kkt_k, stat, direction, bres, wide, wants = first_order_residuals(
        X, D, Z, b, lam, w, fit_bias
    )
    if isinstance(Z, jax.core.Tracer) or isinstance(w, jax.core.Tracer):
        table = dense_hull_table(Z, D, w, fit_bias)
    else:
        compact = _compact(hull, D.shape[0])
        table = hull_table(
            Z, D, weights=np.asarray(w), fit_bias=fit_bias, violated_only=tol if compact else None
        )
    return _report(kkt, kkt_k, stat, direction, bres, wide, wants, table, tol, fit_bias)


@jax.jit
def _violated(margin, mu, tol):
    """Pairs whose ``hull_severity`` exceeds tol."""
    return hull_severity(margin, mu) > tol


@functools.partial(jax.jit, static_argnames="fit_bias")
def _passed(kkt, stat, bres, tol, violated, fit_bias: bool):
    """Conditions 1–3 within tol (the bias's only with one), and no violated hull pair."""
    ok = (kkt <= tol) & (jnp.max(stat, initial=0.0) <= tol) & ~jnp.any(violated)
    return ok & (bres <= tol) if fit_bias else ok


def _report(
    kkt, kkt_k, stat, direction, bres, wide, wants, table, tol, fit_bias
) -> OptimalityReport:
    """The ``OptimalityReport`` of the first-order residuals and the hull table (a ``HullTable``,
    or the ``HullPairs`` of a compact report)."""
    if isinstance(table, HullPairs):
        passed = _passed(kkt, stat, bres, tol, len(table.pairs) > 0, fit_bias)
        return OptimalityReport(
            passed, kkt, kkt_k, stat, direction, bres, wide, wants,
            None, None, None, None, jnp.asarray(table.mu), None, tol, fit_bias, table,
        )  # fmt: skip
    margin, mu = table.margin, table.mu
    violated = _violated(margin, mu, tol)
    passed = _passed(kkt, stat, bres, tol, violated, fit_bias)
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
