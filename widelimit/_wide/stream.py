"""Streaming wide-limit solve: one read of the data per bias update, bounded memory.

The same update and certificate as the in-memory solver; the per-chunk statistics run in one
compiled function (chunks are padded with zero-weight rows to a fixed shape), the sums G and Y are
accumulated in float64, and only O(n_samples) scalars are kept between passes. The certificate's
per-point part is summed block by block (``PointSums``), so after warming up on a small file a
streamed solve compiles nothing for a new number of rows.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core.processes import from_first_process, max_over_processes, sum_over_processes
from .._core.results import RESULTS
from .._core.row_buckets import block_cap
from .._core.store import ActivationStore
from .._core.validate import check_lam, check_weights
from .certificate import PointSums, add_sums, point_sums
from .data_pass import data_pass
from .iterate import host_while_loop, iterate
from .solution import check_result
from .solver import WideSolver, resolvable_rtol, solve_in_memory


def _block(xb, wb, b, lam, nonneg: bool):
    """q, the certificate's ``PointSums`` and (G, Y) of one block: nothing of length n_samples is
    left to compute after the pass, so a streamed solve compiles nothing that depends on N."""
    n1, q, G, Y = data_pass(xb, wb, b, lam, nonneg, True)
    spread = jnp.max(jnp.where(wb[:, None] > 0, jnp.abs(xb - b), 0))  # for the range check
    return q, point_sums(n1, q, wb), G, Y, spread


_block_stats = jax.jit(_block, static_argnums=(4,))

# rows of the first block solved in memory for the streamed solve's starting bias
_WARM_START_ROWS = 4 * 4096


def _weights_for(weights, n_rows: int, dtype):
    """``check_weights`` as a numpy array (sliced per chunk), or None for unit weights."""
    return None if weights is None else np.asarray(check_weights(weights, n_rows, dtype))


def _pass(source: ActivationStore, w, b, lam, nonneg, dtype):
    """Stream every block once: returns numpy q, the float64 ``PointSums`` and float64 (G, Y).

    Blocks mapped from a file are used by XLA without a copy. With a ``pipelined`` source the
    statistics of a block are dispatched (asynchronously) before those of the block before are
    fetched, so the next read overlaps the computation; a source's buffer is refilled only after
    its results are in.
    """
    B = block_cap(source.block_rows, source.n_rows)  # every block is padded to B rows
    qs = []
    sums = None
    GY = np.zeros((2, source.n_features))
    ones = np.ones(B, dtype)
    start = 0
    pending = None

    spread = [0.0]

    def collect(p):
        nonlocal sums
        start, rows, (q, ps, Gb, Yb, sp) = p
        spread[0] = max(spread[0], float(sp))
        q = np.asarray(q)[:rows]
        if not np.all(np.isfinite(q)):
            raise ValueError(f"`X` contains NaN or Inf (in rows {start}..{start + rows - 1})")
        qs.append(q)
        ps = PointSums(*(np.asarray(a, np.float64) for a in ps))
        sums = ps if sums is None else add_sums(sums, ps)
        GY[0] += np.asarray(Gb, np.float64)
        GY[1] += np.asarray(Yb, np.float64)

    for chunk in source:
        rows = chunk.shape[0]
        if rows == B and chunk.dtype == dtype:
            xb = chunk
        else:
            xb = np.zeros((B, source.n_features), dtype)
            xb[:rows] = chunk
        if w is None and rows == B:
            wb = ones
        else:
            wb = np.zeros(B, dtype)
            wb[:rows] = 1.0 if w is None else w[start : start + rows]
        out = (start, rows, _block_stats(jax.device_put(xb), jax.device_put(wb), b, lam, nonneg))
        if pending is not None:
            collect(pending)
        pending = out
        if not source.pipelined:
            collect(pending)
            pending = None
        start += rows
    if pending is not None:
        collect(pending)
    return np.concatenate(qs), sums, GY[0], GY[1], spread[0]


def solve_streaming(
    source: ActivationStore,
    lam,
    *,
    fit_bias,
    weights,
    nonneg_atoms,
    rtol,
    max_steps,
    throw,
    init,
    distributed: bool = False,
):
    """``solve_wide`` on an ``ActivationStore``; see ``solve_wide`` for the arguments. With
    ``distributed``, ``source`` is this process's rows of a ``jax.distributed`` run: every pass's
    sums are reduced over the processes, so all reach the same bias and certificate (the code
    norms are of the local rows)."""
    dtype = (
        jnp.float64 if (source.dtype == np.float64 and jax.config.jax_enable_x64) else jnp.float32
    )
    lam = check_lam(lam, dtype)
    rtol = resolvable_rtol(rtol, dtype)
    d = source.n_features
    if source.weights is not None:
        if weights is not None:
            raise ValueError("pass weights either to the ActivationStore or as `weights`, not both")
        weights = source.weights
    if source.n_rows is not None:
        w = _weights_for(weights, source.n_rows, dtype)
    elif weights is not None:
        n_rows = sum(c.shape[0] for c in source)
        w = _weights_for(weights, n_rows, dtype)
    else:
        w = None
    solver = WideSolver(rtol, max_steps, fit_bias, nonneg_atoms, chunked=False)
    if init is not None:
        b = np.asarray(init, dtype=np.float64)
        if b.shape != (d,) or not np.all(np.isfinite(b)):
            raise ValueError(f"`init` must be a finite array of shape ({d},)")
        b = jnp.asarray(b, dtype)
    elif not fit_bias:
        b = jnp.zeros((d,), dtype)
    else:
        first = np.asarray(next(iter(source)), dtype)[:_WARM_START_ROWS]
        if not np.all(np.isfinite(first)):
            raise ValueError("`X` contains NaN or Inf")
        wf = (
            jnp.ones(first.shape[0], dtype)
            if w is None
            else jnp.asarray(w[: first.shape[0]] + 1e-12, dtype)
        )
        Xf = jnp.asarray(first)
        sub = WideSolver(rtol, 200, True, nonneg_atoms, chunked=False)
        b = solve_in_memory(sub, Xf, wf, lam).bias
        if distributed:  # one starting point for all processes
            b = jnp.asarray(from_first_process(b), dtype)

    run = functools.partial(_pass, source, w, lam=lam, nonneg=nonneg_atoms, dtype=dtype)

    spread = [0.0]

    def stats(b):  # q stays a host array: the host loop never sends it to the device
        q, point, G, Y, spread[0] = run(b=b)
        if distributed:  # every process gets the sums over all processes' rows
            G, Y = sum_over_processes(G), sum_over_processes(Y)
            spread[0] = float(max_over_processes(spread[0]))
            point = point._replace(
                **{
                    f: (max_over_processes if f == "rmax" else sum_over_processes)(
                        getattr(point, f)
                    )
                    for f in point._fields
                    if f != "slack_t"
                }
            )
        sums = PointSums(*(jnp.asarray(a, dtype) for a in point))
        return q, sums, jnp.asarray(G, dtype), jnp.asarray(Y, dtype)

    s = iterate(solver, stats, b, lam, loop=host_while_loop)
    sol = solver.finish_from_sums(
        s.bias,
        lam,
        s.sums,
        s.G,
        s.Y,
        s.steps,
        jax.device_put((float(lam) * np.maximum(s.q - 1, 0)).astype(dtype)),
        jax.device_put(s.q > 1),
    )
    sol = _mark_out_of_range(sol, spread[0])
    return check_result(sol) if throw else sol


def _mark_out_of_range(sol, spread: float):
    """A streamed solve runs on X as it is (no in-memory rescue): its result is
    ``RESULTS.out_of_range`` when W or its bound is not finite, or when the largest entry of
    |x − b| (``spread``) squares into the dtype's subnormal range or beyond its maximum, where
    distances underflow to 0 or overflow."""
    fi = np.finfo(np.dtype(sol.objective.dtype))
    finite = bool(jnp.isfinite(sol.objective) & jnp.isfinite(sol.dual_objective))
    finite &= bool(jnp.all(jnp.isfinite(sol.bias)))
    d = sol.bias.shape[-1]
    lo, hi = float(fi.tiny) / float(fi.eps), float(fi.max) / (4 * d)
    squares_ok = spread == 0 or lo <= spread * spread <= hi
    if sol.result == RESULTS.successful and not (finite and squares_ok):
        sol = eqx.tree_at(lambda t: t.result, sol, RESULTS.out_of_range)
    return sol
