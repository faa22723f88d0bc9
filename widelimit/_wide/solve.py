"""Public entry points of the wide-limit solve: in memory, sharded, streamed, and λ paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core.devices import row_mesh, shard_rows
from .._core.precision import full_precision
from .._core.results import RESULTS
from .._core.row_buckets import cut_rows, pad_rows, padded_rows
from .._core.store import as_store, is_streamable
from .._core.validate import (
    check_lam,
    check_lams,
    check_matrix,
    check_positive_int,
    check_vector,
    check_weights,
)
from .data_pass import block_stats, is_sharded
from .path import solve_path_grouped
from .scaling import effective_lam, solve_standardised, standardise, unstandardise
from .solution import WideSolution, check_result
from .solver import (
    WideSolver,
    resolvable_rtol,
    solve_path_vmap,
    weighted_mean,
)


def _shard(X, w, devices):
    """Rows sharded over ``devices`` (padded with zero-weight rows); b stays replicated."""
    mesh = row_mesh(devices)
    k = mesh.devices.size
    n = X.shape[0]
    pad = (-n) % k
    if pad:
        X = jnp.concatenate([X, jnp.broadcast_to(X[:1], (pad, X.shape[1]))])
        w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
    X, w = shard_rows(mesh, X, w)
    return X, w, n


def _bucketed(X, w):
    """X and w padded with zero-weight copies of row 0 up to ``row_bucket(n)`` rows (``row_buckets``):
    a new N reuses a compiled solve (0.8–1 s to compile at N = 10³–10⁴, d = 384; the solve takes
    milliseconds). A zero-weight row changes no sum of the solve and repeats row 0 in its maxima;
    ``_trim`` drops its outputs. Returns (X, w, n)."""
    n = X.shape[0]
    nb = padded_rows(X, w)
    if nb is None:
        return X, w, n
    return pad_rows(X, nb), pad_rows(w, nb, fill=0), n


def _trim(sol: WideSolution, n: int) -> WideSolution:
    """``sol`` without the outputs of padded rows (past the first n)."""
    if sol.code_norms.shape[-1] == n:
        return sol
    axis = sol.code_norms.ndim - 1
    return WideSolution(
        **{
            **{f: getattr(sol, f) for f in sol.__dataclass_fields__},
            "code_norms": cut_rows(sol.code_norms, n, axis),
            "encoded": cut_rows(sol.encoded, n, axis),
        }
    )


@full_precision
def solve_wide(
    X: Float[ArrayLike, "n_samples n_features"] | str,
    lam: float,
    *,
    fit_bias: bool = True,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    nonneg_atoms: bool = False,
    rtol: float | None = None,
    max_steps: int = 1000,
    throw: bool = True,
    init: Float[ArrayLike, " n_features"] | None = None,
    devices=None,
    chunk_rows: int | None = None,
    distributed: bool = False,
) -> WideSolution:
    """Solve the wide-dictionary limit W(λ) exactly, with a certified duality gap.

    W(λ) = min_b (1/N) Σ_n w_n H_λ(||x_n − b||), H_λ(r) = r²/2 (r ≤ λ), λr − λ²/2 (r > λ): each
    point is its own atom, m_n = max(0, 1 − λ/||x_n − b||)(x_n − b), and b is the Huber location.

    Args:
        X: data (n_samples, n_features) as a numpy/JAX array; or, streamed in chunks with bounded
            memory, an ``ActivationStore`` or anything it reads: a ``.npy``/``.safetensors`` path,
            a directory of such shards, a ``np.memmap``, a list of row blocks or a callable
            returning an iterator of row blocks.
        lam: λ > 0.
        fit_bias: fit the fit_bias b (else b = 0, closed form).
        weights: w_n ≥ 0 (normalised to Σ w_n = N); default all ones.
        nonneg_atoms: restrict atoms to d ≥ 0 (m_n built from [x_n − b]₊).
        rtol: stop when the certified relative gap ≤ rtol. Default 1e-6 (float32), 1e-10 (float64).
            float32 certifies ~1e-6 when some points lie within λ of b; otherwise ~1e-5.
        max_steps: at most this many fit_bias updates.
        throw: raise if the tolerance is not reached (else inspect ``result``).
        init: initial fit_bias (default: the weighted mean).
        devices: ``"all"`` or a list of devices to shard the rows over (b is replicated).
        chunk_rows: rows per chunk when streaming.
        distributed: X is this process's share of the rows in a ``jax.distributed`` run
            (``ActivationStore(...).part()``); the rows are streamed and every pass's sums are
            reduced over all processes, which all return the same bias, objective and certificate
            (``code_norms``/``encoded`` are of the local rows).
    """
    max_steps = check_positive_int(max_steps, "max_steps", 0)
    if rtol is not None and not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"`rtol` must be finite and > 0, got {rtol}")
    if is_streamable(X) or distributed:
        from .stream import solve_streaming

        if distributed and devices is not None:
            raise ValueError("`distributed` runs use each process's devices; leave `devices` unset")
        return solve_streaming(
            as_store(X, chunk_rows),
            lam,
            fit_bias=fit_bias,
            weights=weights,
            nonneg_atoms=nonneg_atoms,
            rtol=rtol,
            max_steps=max_steps,
            throw=throw,
            init=init,
            distributed=distributed,
        )
    X = check_matrix(X, "X", check_finite=False)
    n, d = X.shape
    lam = check_lam(lam, X.dtype)
    w = check_weights(weights, n, X.dtype)
    b0 = None if init is None else check_vector(init, d, X.dtype, "init")
    rtol = resolvable_rtol(rtol, X.dtype)
    if devices is not None and not isinstance(X, jax.core.Tracer):
        X, w, n_real = _shard(X, w, devices)
    else:
        X, w, n_real = _bucketed(X, w)
    solver = WideSolver(rtol, max_steps, fit_bias, nonneg_atoms, chunked=not is_sharded(X))
    sol = _trim(solve_standardised(solver, X, w, lam, b0), n_real)
    return check_result(sol, X) if throw else sol


@full_precision
def solve_wide_path(
    X: Float[ArrayLike, "n_samples n_features"],
    lams: Float[ArrayLike, " n_lams"],
    *,
    fit_bias: bool = True,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    nonneg_atoms: bool = False,
    rtol: float | None = None,
    max_steps: int = 1000,
    throw: bool = True,
    method: str = "scan",
) -> WideSolution:
    """Solve W(λ) for every λ in ``lams`` in one compiled program.

    ``method="scan"`` (default, measured faster on CPU; see benchmarks/wide_scaling.py) solves the λ
    in decreasing order, in groups of 8 that share each data pass (``_wide_path``), each group
    warm-started at the last fit_bias of the one before; ``method="vmap"`` solves all λ in parallel
    from the mean. Returns a ``WideSolution`` whose leaves have a leading λ axis in
    the order of ``lams``.
    """
    if method not in ("scan", "vmap"):
        raise ValueError(f"`method` must be 'scan' or 'vmap', got {method!r}")
    max_steps = check_positive_int(max_steps, "max_steps", 0)
    X = check_matrix(X, "X", check_finite=False)
    n, d = X.shape
    lams = check_lams(lams, X.dtype)
    w = check_weights(weights, n, X.dtype)
    X, w, n = _bucketed(X, w)
    rtol = resolvable_rtol(rtol, X.dtype)
    # the vmapped solve keeps the direct pass (``WideSolver.raw_sums``)
    solver = WideSolver(rtol, max_steps, fit_bias, nonneg_atoms, raw_sums=method == "scan")

    def path(Y, lams_y):
        if method == "vmap":
            b0 = weighted_mean(Y, w) if fit_bias else jnp.zeros((d,), X.dtype)
            return solve_path_vmap(solver, Y, w, lams_y, b0)
        return solve_path_grouped(solver, Y, w, lams_y)

    # X as it is first; the standardised data (scaling.py) only when some λ failed on it
    sols = unstandardise(path(X, lams), jnp.zeros((d,), X.dtype), jnp.ones((), X.dtype), lams)
    ok = (sols.result == RESULTS.successful) & (sols.objective != 0)
    if not isinstance(ok, jax.core.Tracer) and not bool(np.all(np.asarray(ok))):
        Y, c, s, R = standardise(X, w, fit_bias)
        sols = unstandardise(path(Y, effective_lam(R, lams / s)), c, s, lams)
    sols = _trim(sols, n)
    return check_result(sols, X) if throw else sols


def bias_statistics(X: Float[Array, "n d"], lam, b, *, weights=None, nonneg_atoms=False):
    """Pass statistics (n1, q, G, Y) at bias ``b`` (for tests and tools)."""
    X = check_matrix(X)
    w = check_weights(weights, X.shape[0], X.dtype)
    return block_stats(X, w, jnp.asarray(b, X.dtype), check_lam(lam, X.dtype), nonneg_atoms)
