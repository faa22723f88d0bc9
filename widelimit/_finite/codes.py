"""Exact nonnegative-lasso codes for a fixed dictionary (SPEC §3).

For every point: z_n = argmin_{z ≥ 0} ½||x_n − b − Dz||² + λ||z||₁, solved by FISTA with adaptive
restart on the Gram matrix G = D Dᵀ (atoms are rows), batched over all points, stopping when the
KKT residual max_n,k |z − [z − (Gz − c + λ)]₊| ≤ tol·λ (c = D(x_n − b)).
"""

from __future__ import annotations

import os
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from .._core.code_store import CodeStore
from .._core.devices import per_device, placement
from .._core.objective import check_sparse
from .._core.precision import full_precision
from .._core.results import RESULTS
from .._core.row_buckets import cut_rows, pad_rows, padded_rows
from .._core.sparse_codes import SparseCodes, sparse_decode
from .._core.store import is_store_like
from .._core.validate import (
    check_lam,
    check_matrix,
    check_number,
    check_positive_int,
    check_vector,
    to_device,
)


def _lipschitz(G):
    return jnp.maximum(jnp.linalg.eigvalsh(G)[-1], jnp.finfo(G.dtype).tiny)


def gram_lipschitz(D, G=None):
    """λ_max(D Dᵀ) from the smaller of D Dᵀ (``G`` when already formed) and Dᵀ D: O(min(K, d)³),
    not O(K³) (2.6 s at K = 4096)."""
    k, d = D.shape
    if d < k:
        return _lipschitz(D.T @ D)
    return _lipschitz(D @ D.T if G is None else G)


def _matvec(Y, G):
    """Y G for one shared Gram (K × K) or one Gram per row (N × M × M)."""
    return Y @ G if G.ndim == 2 else jnp.einsum("nj,nij->ni", Y, G)


def kkt_residual(Z, G, C, lam):
    """Natural residual of the nonnegative lasso, per entry (0 exactly at the optimum)."""
    grad = _matvec(Z, G) - C + lam
    return jnp.abs(Z - jnp.maximum(Z - grad, 0))


@eqx.filter_jit
def nonneg_lasso(G, C, lam, Z0, tol, max_steps, L=None):
    """FISTA with gradient restart for min_{Z≥0} ½ tr(Z G Zᵀ) − ⟨C, Z⟩ + λ Σ Z; returns (Z, steps).

    G is one Gram matrix (K × K) or one per row (N × M × M, with per-row step sizes 1/L)."""
    L = _lipschitz(G) if L is None else L
    thresh = tol * lam

    def prox_step(Y):
        return jnp.maximum(Y - (_matvec(Y, G) - C + lam) / L, 0)

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


@eqx.filter_jit
def nonneg_lasso_cd(Gt, grad0, lam, Zt0, tol, max_sweeps, unroll: int = 1):
    """Cyclic coordinate descent for the same problem with one Gram matrix per row, in
    coordinate-major layout (Gt[j, i, r] = G_r[j, i]; grad0, Zt0 are M × R), from the gradient
    grad0 = G Z0 − C and keeping it up to date (z_j ← max(0, z_j − (g_j + λ)/G_jj), g += δ G_j): a
    coordinate step reads one contiguous M × R slab, and one sweep reads every G_r once. A few
    tens of sweeps usually reach tol where FISTA needs hundreds of steps. Stops when the KKT
    residual is ≤ tol·λ (``unroll`` coordinates per loop step); returns (Zt, sweeps)."""
    m = Zt0.shape[0]
    thresh = tol * lam
    diag = jnp.diagonal(Gt, axis1=0, axis2=1).T
    diag = jnp.where(diag > 0, diag, 1)

    def coord(j, zg):
        Z, g = zg
        zj = Z[j]
        new = jnp.maximum(zj - (g[j] + lam) / diag[j], 0)
        return Z.at[j].set(new), g + (new - zj)[None, :] * Gt[j]

    def sweep(s):
        Z, g, k, _ = s
        Z, g = lax.fori_loop(0, m, coord, (Z, g), unroll=unroll)
        res = jnp.max(jnp.abs(Z - jnp.maximum(Z - (g + lam), 0)))
        return Z, g, k + 1, res

    res0 = jnp.max(jnp.abs(Zt0 - jnp.maximum(Zt0 - (grad0 + lam), 0)))
    Z, _, k, _ = lax.while_loop(
        lambda s: (s[3] > thresh) & (s[2] < max_sweeps),
        sweep,
        (Zt0, grad0, jnp.asarray(0, jnp.int32), res0),
    )
    return Z, k


def bucket_size(need: int) -> int:
    """Smallest size ≥ need in 16·{1, 1.5, 2, 3, 4, 6, …} (few distinct sizes, so few compiles)."""
    size = 16
    while size < need:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def row_supports(Z) -> np.ndarray:
    """Support sizes s_n = #{k: z_nk > 0} of the rows of Z, on the host."""
    return np.sum(np.asarray(Z) > 0, axis=1)


def working_set_size(s, width: int, minimum: int = 16, quantile: float = 0.9) -> tuple[int, ...]:
    """Working-set sizes (tiers) for ``working_set_lasso``, from the support sizes s_n of the rows
    (``row_supports``): the first tier holds 1.25·q90(s) + 2 atoms (the ``quantile``), the second
    1.25·max(s) + 2 (for the rows whose support fills the first); each rounded up to
    ``bucket_size`` sizes and capped at width."""
    s = np.asarray(s)
    sizes = []
    for q in (np.quantile(s, quantile), s.max()):
        size = min(width, bucket_size(max(minimum, int(1.25 * q + 2))))
        if not sizes or size > sizes[-1]:
            sizes.append(size)
    return tuple(sizes)


def _violation(D, Xc, lam, Zr, rows):
    """Per-row KKT residual max_k |z − [z − g]₊| and gradient g = λ − (x − b − Dz)·D of ``rows``."""
    grad = lam - (Xc[rows] - Zr @ D) @ D.T
    return jnp.max(jnp.abs(Zr - jnp.maximum(Zr - grad, 0)), axis=1), grad


def _violation_ws(D, Xc, lam, Zr, rows, idx, zs):
    """``_violation`` of rows whose codes ``zs`` (rows × ws) sit at atoms ``idx``: D z_n summed
    from the ws atoms the row uses (O(ws·d) per row, not the dense (rows × K) @ (K × d) product)."""
    grad = lam - (Xc[rows] - sparse_decode(idx, zs, D)) @ D.T
    return jnp.max(jnp.abs(Zr - jnp.maximum(Zr - grad, 0)), axis=1), grad


def _start_violation(D, Xc, lam, Z):
    """``_violation`` of every row; from all-zero codes (a cold start) without the Z D product."""
    n = Xc.shape[0]

    def cold(_):
        grad = lam - Xc @ D.T
        return jnp.max(jnp.maximum(-grad, 0), axis=1, initial=0.0), grad

    return lax.cond(jnp.any(Z > 0), lambda Z: _violation(D, Xc, lam, Z, jnp.arange(n)), cold, Z)


def _dense_rows(D, G, Xc, lam, Z, v, grads, tol, max_steps):
    """Rows still violating (v > tol·λ) solved densely by FISTA, the worst 64 at a time; returns
    (Z, v)."""
    n = Z.shape[0]
    thresh = tol * lam
    dblock = min(n, 64)
    L = lax.cond(jnp.max(v) > thresh, gram_lipschitz, lambda D: jnp.ones((), D.dtype), D)

    def dense_rows(carry):
        Z, v, grads, i = carry
        _, rows = lax.top_k(v, dblock)
        Zr = Z[rows]
        zb, _ = nonneg_lasso(G, lam - grads[rows] + Zr @ G, lam, Zr, tol, max_steps, L=L)
        vb, gb = _violation(D, Xc, lam, zb, rows)
        return Z.at[rows].set(zb), v.at[rows].set(vb), grads.at[rows].set(gb), i + 1

    Z, v, _, _ = lax.while_loop(
        lambda c: (jnp.max(c[1]) > thresh) & (c[3] < -(-n // dblock) + 1),
        dense_rows,
        (Z, v, grads, jnp.asarray(0, jnp.int32)),
    )
    return Z, v


@eqx.filter_jit
def dense_fallback(D, b, X, lam, Z, tol, max_steps):
    """The dense solve of ``working_set_lasso`` on its own, for codes from ``dense=False``."""
    Xc = X - b
    v, grads = _violation(D, Xc, lam, Z, jnp.arange(X.shape[0]))
    return _dense_rows(D, D @ D.T, Xc, lam, Z, v, grads, tol, max_steps)[0]


@eqx.filter_jit
def working_set_lasso(
    D,
    b,
    X,
    lam,
    Z0,
    tol,
    max_steps,
    ws: int | tuple[int, ...],
    block: int = 1024,
    dense: bool = True,
    kkt: bool = False,
):
    """Nonnegative-lasso codes by per-point working sets (the support first, then the most violated
    KKT conditions), in tiers of increasing size ``ws``. In each tier, rows are processed ``block``
    at a time (256 after the first tier), worst KKT residual first: gather their Gram blocks
    (ws × ws × rows), solve by batched coordinate descent, and update their residual from
    λ − (x − b − Dz)·d_k (O(Kd) per row, no K × K products), kept for every row (N × K) so that it
    is computed once per solve and once per solved block. Rows whose support fills a tier go to the
    next; those that fill the last are solved densely (FISTA), 64 at a time. With ``dense=False``
    that last step is left out and (Z, whether it is needed) returned: ``dense_fallback`` is then a
    program of its own, compiled only by a fit that needs it. With ``kkt=True``: (Z, the worst
    KKT residual max_n,k |z − [z − g]₊|), kept exact for every row as it is solved."""
    n = X.shape[0]
    Xc = X - b
    G = D @ D.T
    thresh = tol * lam
    tiers = (ws,) if isinstance(ws, int) else tuple(ws)

    def tier(Z, v, grads, todo, size, block, unroll):
        """Solve the rows in ``todo`` on working sets of ``size``; returns Z, v and the rows whose
        support filled the working set."""

        def ws_block(carry):
            Z, v, grads, full, i = carry
            _, rows = lax.top_k(jnp.where(todo & ~full, v, 0), block)
            Zr = Z[rows]
            _, idx = lax.top_k(jnp.where(Zr > 0, jnp.inf, -grads[rows]), size)
            it = idx.T  # coordinate-major: the Gram blocks as (size, size, block)
            Gt = G[it[:, None, :], it[None, :, :]]
            zt = jnp.take_along_axis(Zr, idx, 1).T
            # the gradient Gz − c on the working set is the kept one less λ, not recomputed from
            # an (N × K) product c = D(x − b): exact when the support fits in the working set
            # (else the row's KKT residual, computed exactly below, sends it back for another solve)
            g0 = jnp.take_along_axis(grads[rows], idx, 1).T - lam
            zs = nonneg_lasso_cd(Gt, g0, lam, zt, tol, max_steps, unroll)[0].T
            Zr = jnp.zeros_like(Zr).at[jnp.arange(block)[:, None], idx].set(zs)
            if 8 * size <= D.shape[0]:  # D z from the ws atoms: gathers beat the dense product
                vr, gr = _violation_ws(D, Xc, lam, Zr, rows, idx, zs)
            else:
                vr, gr = _violation(D, Xc, lam, Zr, rows)
            filled = jnp.all(zs > 0, axis=1)
            return (
                Z.at[rows].set(Zr),
                v.at[rows].set(vr),
                grads.at[rows].set(gr),
                full.at[rows].set(filled),
                i + 1,
            )

        limit = 3 * (-(-n // block))
        Z, v, grads, full, _ = lax.while_loop(
            lambda c: (jnp.max(jnp.where(todo & ~c[3], c[1], 0)) > thresh) & (c[4] < limit),
            ws_block,
            (Z, v, grads, jnp.zeros(n, bool), jnp.asarray(0, jnp.int32)),
        )
        return Z, v, grads, full

    Z = jnp.maximum(Z0, 0)
    v, grads = _start_violation(D, Xc, lam, Z)
    todo = jnp.ones(n, bool)
    for t, size in enumerate(tiers):  # the first tier solves most rows: its sweeps are unrolled
        first = t == 0
        Z, v, grads, todo = tier(
            Z, v, grads, todo, size, min(n, block if first else 256), 4 if first else 1
        )
    if not dense:
        return Z, jnp.max(v) > thresh
    Z, v = _dense_rows(D, G, Xc, lam, Z, v, grads, tol, max_steps)
    return (Z, jnp.max(v, initial=0.0)) if kkt else Z


class CodeSolution(eqx.Module):
    """Exact codes and how their solve ended. ``kkt`` = max_n,k |z − [z − (Gz − c + λ)]₊|/λ, the
    worst natural residual in units of λ; ``result`` is ``RESULTS.successful`` when kkt ≤ tol,
    ``max_steps_reached`` when the step limit came first, ``nonfinite`` on NaN/Inf."""

    codes: Float[Array, "n_samples width"]
    kkt: Float[Array, ""]
    result: RESULTS


def code_tiers(width: int, init, guess=None) -> tuple[int, ...] | None:
    """The working-set tiers the fitter uses (``working_set_lasso``): none up to 64 atoms (the
    dense solver), then sized from ``init``'s row supports; when ``init`` is absent, traced or all
    zero, ``first_tiers`` of ``guess()`` (the guessed supports of a sample of rows,
    ``support_guess.guess_supports``) when given, else ``initial_tiers``."""
    if width <= 64:
        return None
    supports = None if init is None or isinstance(init, jax.core.Tracer) else row_supports(init)
    if supports is None or not supports.any():
        return initial_tiers(width) if guess is None else first_tiers(width, guess())
    return working_set_size(supports, width)


def first_tiers(k: int, guess) -> tuple[int, ...]:
    """Working-set tiers of a fit's first epoch from the guessed support sizes of its first codes
    (``support_guess.guess_supports``, of 64 rows): the first tier as ``working_set_size``'s from
    their 95 % quantile, not the 90 % (a 64-row sample's q90 fell short of all rows' by 15–20 % on
    sparse-coded data, and a first tier too small for the next epoch compiles the epoch again;
    one too large by less than 2× is kept), the last at least 256 atoms (capped at k), so that
    rows the guess underrates are still solved in tiers."""
    ws = working_set_size(guess, k, quantile=0.95)
    return tier_pair(ws[0], max(ws[-1], min(k, 256)))


def tier_pair(first: int, last: int) -> tuple[int, ...]:
    """The tiers (first, last), or (first,) when the last holds no more atoms than the first."""
    return (first, last) if last > first else (first,)


def initial_tiers(width: int, first: int = 64) -> tuple[int, int]:
    """Working-set tiers before any codes exist: ``first`` (64), then 256 atoms."""
    return (min(width, first), min(width, 256))


def _codes_and_worst(atoms, b, X, lam, Z0, tol, max_steps, ws):
    """(codes, worst KKT residual max_n,k |z − [z − g]₊|) of ``solve_codes``."""
    if _uses_working_sets(ws, atoms.shape[0]):  # the residual it keeps is exact for every row
        return working_set_lasso(atoms, b, X, lam, Z0, tol, max_steps, ws, kkt=True)
    Z = gram_codes(atoms, b, X, lam, Z0, tol, max_steps, ws)
    # the gradient Gz − c + λ = λ − (x − b − Dz)·D: two (N × K × d) products, not Z G
    res, _ = _violation(atoms, X - b, lam, Z, slice(None))
    return Z, jnp.max(res, initial=0.0)


@eqx.filter_jit
def _solve_codes(atoms, b, X, lam, Z0, tol, max_steps, ws, mesh=None):
    """``solve_codes``' program. With ``mesh`` (a 1-D mesh named ``rows``; X and Z0 split along
    it), each device solves its own rows with ``jax.shard_map``: rows are independent problems, so
    the devices never communicate except for the one ``pmax`` of the worst residual (a program
    XLA partitions itself would exchange rows at every working-set step)."""
    if mesh is None:
        Z, worst = _codes_and_worst(atoms, b, X, lam, Z0, tol, max_steps, ws)
    else:
        from jax.sharding import PartitionSpec as P

        def local(atoms, b, X, lam, Z0):
            Z, worst = _codes_and_worst(atoms, b, X, lam, Z0, tol, max_steps, ws)
            return Z, lax.pmax(worst, "rows")

        Z, worst = per_device(local, mesh, (P(), P(), P("rows"), P(), P("rows")), (P("rows"), P()))(
            atoms, b, X, lam, Z0
        )
    kkt = worst / lam
    # a NaN row's residual can drop out of the worst one (max over NaN and numbers): check Z too
    result = RESULTS.where(
        jnp.isfinite(kkt) & jnp.all(jnp.isfinite(Z)),
        RESULTS.where(kkt <= tol, RESULTS.successful, RESULTS.max_steps_reached),
        RESULTS.nonfinite,
    )
    return CodeSolution(Z, kkt, result)


@full_precision
def solve_codes(
    atoms: Float[ArrayLike, "width n_features"],
    bias: Float[ArrayLike, " n_features"] | None,
    X: Float[ArrayLike, "n_samples n_features"],
    lam: float,
    *,
    init: Float[ArrayLike, "n_samples width"] | None = None,
    tol: float = 1e-4,
    max_steps: int = 500,
    throw: bool = False,
) -> CodeSolution:
    """Exact codes z_n = argmin_{z≥0} ½||x_n − b − Dz||² + λ||z||₁ (``bias=None`` means b = 0),
    with their status (``CodeSolution``).

    The fitter's solver: per-point working sets solved by batched coordinate descent when
    K > 64 (rows that outgrow them solved densely), FISTA on the Gram matrix otherwise; warm-started
    at ``init``. Stops when every KKT residual is ≤ tol·λ or after ``max_steps``. The default
    tol = 1e-4 is ``fit_dictionary``'s ``code_tol``; on the bundled real activations it gives the
    loss of tol = 1e-8 to 1e-6 relative (tests/test_finite.py). ``throw=True`` raises unless the
    solve succeeded (inside ``jit``, through ``eqx.error_if``). Called eagerly on a small X
    (N·max(d, K) ≤ 2²⁰) it solves X's rows padded to a row bucket (``_core.row_buckets``), so that a
    new N in the bucket compiles nothing.
    """
    X = check_matrix(X, "X")
    atoms = check_matrix(atoms, "atoms")
    if atoms.shape[1] != X.shape[1]:
        raise ValueError(f"`atoms` has {atoms.shape[1]} features but `X` has {X.shape[1]}")
    dt = jnp.result_type(X.dtype, atoms.dtype)
    X, atoms = X.astype(dt), atoms.astype(dt)
    lam = check_lam(lam, dt)
    check_positive_int(max_steps, "max_steps")
    check_number(tol, "tol", positive=True)
    b = jnp.zeros(X.shape[1], dt) if bias is None else check_vector(bias, X.shape[1], dt, "bias")
    (n, _), k = X.shape, atoms.shape[0]
    Z0 = None if init is None else jnp.asarray(init, dt)
    if Z0 is not None and Z0.shape != (n, k):
        raise ValueError(f"`init` must have shape {(n, k)}, got {Z0.shape}")
    ws = code_tiers(k, init)  # no guess: the same tiers inside jit and for every N of a bucket
    # copies of row 0 up to a row bucket (``row_buckets``): a new N compiles nothing
    nb = padded_rows(X, *([] if Z0 is None else [Z0]), width=k)
    if nb is not None:
        X = pad_rows(X, nb)
        Z0 = to_device(np.zeros((nb, k), dt), dt) if Z0 is None else pad_rows(Z0, nb)
    elif Z0 is None:
        Z0 = jnp.zeros((n, k), dt)
    sol = _solve_codes(atoms, b, X, lam, jnp.maximum(Z0, 0), tol, max_steps, ws)
    if nb is not None:  # a copy's KKT residual is row 0's: the worst one is unchanged
        sol = CodeSolution(cut_rows(sol.codes, n), sol.kkt, sol.result)
    if throw:
        ok = sol.result == RESULTS.successful
        if isinstance(ok, jax.core.Tracer):
            return sol.result.error_if(sol, ~ok)
        if not bool(ok):
            raise RuntimeError(
                f"encode: {RESULTS[sol.result]} (KKT residual {float(sol.kkt):.3g}·λ, tol {tol:g})"
            )
    return sol


@full_precision
def encode(
    atoms: Float[ArrayLike, "width n_features"],
    bias: Float[ArrayLike, " n_features"] | None,
    X: Float[ArrayLike, "n_samples n_features"],
    lam: float,
    *,
    init: Float[ArrayLike, "n_samples width"] | None = None,
    tol: float = 1e-4,
    max_steps: int = 500,
    throw: bool = False,
    sparse: bool | None = None,
    out: str | os.PathLike | None = None,
    devices=None,
    shard: str = "rows",
    block_rows: int | None = None,
    progress: bool | None = None,
) -> Float[Array, "n_samples width"] | SparseCodes | CodeStore:
    """``solve_codes(...).codes``: exact codes z_n = argmin_{z≥0} ½||x_n − b − Dz||² + λ||z||₁,
    by the fitter's solver, to a KKT residual ≤ tol·λ (``solve_codes`` also returns the status).
    Codes that ``max_steps`` left short of tol come with a warning naming their worst KKT residual
    (``throw=True`` makes it an error; inside a trace, use ``solve_codes``' status); codes that
    overflowed are a ValueError.

    Out of core: X may be an ``ActivationStore`` or anything it reads (a ``.npy``/``.safetensors``
    path, a directory of shards, an iterable of row blocks; a memmap is an array here: wrap it in
    an ``ActivationStore`` to stream it). With a store, ``sparse=True``, ``out`` or ``devices``, X
    is encoded in blocks of ``block_rows`` rows (one compile for every N), each solved to tol (a
    warning names the worst KKT residual otherwise; ``throw=True`` makes it an error). The codes
    are ``SparseCodes`` when ``sparse`` (the default for a store), else dense; with ``out=dir`` the
    blocks are written to disk as they finish and a ``CodeStore`` is returned (an interrupted
    encode resumes after the last written block). ``devices`` (``"all"`` or a list) splits each
    block's rows over devices, or with ``shard="atoms"`` the atoms and code columns (a width
    divisible by the number of devices; for dictionaries beyond one device's memory). Blocks size
    their working sets from a guess of the codes' supports on 64 rows of the first block
    (``support_guess``; 16 atoms for sparse codes, not 64: 1.7× faster on real activations), so
    their codes can differ from the in-memory encode's as any two solves to tol do: per-row
    losses to ~tol, codes more where a row's problem is ill-conditioned (d = 8, K = 100, ~7
    nonzeros: losses to 5e-6, codes by 3 %, as a tol = 1e-8 solve differs from either).
    """
    if sparse is None:
        sparse = is_store_like(X) or out is not None
    placement(devices, shard)  # ValueError for a bad `shard`, or "atoms" without devices
    if sparse or out is not None or devices is not None or is_store_like(X):
        if init is not None:
            raise ValueError("`init` is for in-memory dense codes; it cannot warm-start a stream")
        from .stream_encode import encode_store

        atoms = check_matrix(atoms, "atoms")
        dt = atoms.dtype
        lam = check_lam(lam, dt)
        check_positive_int(max_steps, "max_steps")
        check_number(tol, "tol", positive=True)
        if block_rows is not None:
            check_positive_int(block_rows, "block_rows")
        d = atoms.shape[1]
        b = jnp.zeros((d,), dt) if bias is None else check_vector(bias, d, dt, "bias")
        if out is not None and not sparse:
            raise ValueError("codes written to `out` are sparse; leave `sparse` unset or True")
        codes = encode_store(
            atoms,
            b,
            X,
            lam,
            tol=tol,
            max_steps=max_steps,
            throw=throw,
            out=None if out is None else os.fspath(out),
            devices=devices,
            shard=shard,
            block_rows=block_rows,
            progress=progress,
        )
        return codes if sparse else codes.todense()
    sol = solve_codes(atoms, bias, X, lam, init=init, tol=tol, max_steps=max_steps, throw=throw)
    if not isinstance(sol.kkt, jax.core.Tracer) and sol.result == RESULTS.nonfinite:
        raise ValueError("encode: the codes overflowed (scale X and λ down, or use float64)")
    warn_unsolved(sol.kkt, tol, max_steps)
    return sol.codes


def warn_unsolved(worst, tol: float, max_steps: int, stacklevel: int = 4, what: str = "encode"):
    """Warn when codes were returned with a worst KKT residual ``worst`` (in units of λ) > tol;
    nothing inside a trace (there ``solve_codes``' status is the way). ``stacklevel`` 4 names the
    caller of a public function that calls this (through ``full_precision``)."""
    if not isinstance(worst, jax.core.Tracer) and float(worst) > tol:
        warnings.warn(
            f"{what}: the codes reached a KKT residual of {worst:.3g}·λ > tol = {tol:g} within "
            f"max_steps = {max_steps} (raise max_steps, or pass throw=True to make this an error)",
            stacklevel=stacklevel,
        )


@full_precision
def decode(
    atoms: Float[ArrayLike, "width n_features"],
    bias: Float[ArrayLike, " n_features"] | None,
    codes: Float[ArrayLike, "n_samples width"] | SparseCodes,
) -> Float[Array, "n_samples n_features"]:
    """Reconstruction x̂_n = b + D z_n (codes dense or ``SparseCodes``)."""
    atoms = jnp.asarray(atoms)
    if isinstance(codes, SparseCodes):
        if codes.width != atoms.shape[0]:
            raise ValueError(
                f"`codes` has width {codes.width} but there are {atoms.shape[0]} atoms"
            )
        check_sparse(codes)  # (a gather clamps an index out of range: a wrong x̂, not an error)
        out = sparse_decode(codes.indices, jnp.asarray(codes.values, atoms.dtype), atoms)
    else:
        if np.shape(codes)[-1:] != atoms.shape[:1]:
            raise ValueError(
                f"`codes` must have {atoms.shape[0]} columns, one per atom, got shape "
                f"{np.shape(codes)}"
            )
        out = jnp.asarray(codes, atoms.dtype) @ atoms
    return out if bias is None else out + jnp.asarray(bias, atoms.dtype)


def _uses_working_sets(ws, width: int) -> bool:
    return ws is not None and min(ws if isinstance(ws, tuple) else (ws,)) < width


def gram_codes(
    atoms,
    b,
    X,
    lam,
    Z0,
    tol,
    max_steps,
    ws: int | tuple[int, ...] | None = None,
    dense: bool = True,
):
    """Traceable core used by the fitting loops: codes for (atoms, b) warm-started at Z0
    (per-point working sets in tiers of ``ws`` atoms when ws < width, else the dense solver).
    ``dense=False``: as ``working_set_lasso``'s, (codes, whether rows still need the dense solve)."""
    if _uses_working_sets(ws, atoms.shape[0]):
        return working_set_lasso(atoms, b, X, lam, Z0, tol, max_steps, ws, dense=dense)
    G = atoms @ atoms.T
    Z = nonneg_lasso(G, (X - b) @ atoms.T, lam, Z0, tol, max_steps, L=gram_lipschitz(atoms, G))[0]
    return Z if dense else (Z, jnp.zeros((), bool))
