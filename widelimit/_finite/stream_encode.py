"""Exact codes of data larger than memory, as ``SparseCodes`` in memory or a ``CodeStore`` on disk.

The store is read in fixed-shape blocks (the last one padded with rows x = b, whose codes are 0),
so one compile serves every N; each block is solved by ``solve_codes``' solver (rows sharded over
``devices`` when given: each device solves its share of a block's rows under ``jax.shard_map``,
with the atoms replicated; or the atoms split, ``shard="atoms"``) and
kept as ``SparseCodes`` with k the block's largest support rounded up to a power of two. The
working sets of every block are sized once, from a guess of the codes' supports on rows of the
store's first block (``support_guess``), which every run reads, a resumed one too. Written
blocks are never recomputed: an interrupted ``encode(..., out=dir)`` resumes after the last one.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._core.checkpoint import digest
from .._core.code_store import CodeWriter, load_codes
from .._core.devices import placement
from .._core.lock import dir_lock
from .._core.outputs import check_output_dir
from .._core.progress import Progress
from .._core.results import RESULTS
from .._core.row_buckets import block_cap
from .._core.sparse_codes import SparseCodes, concatenate
from .._core.store import as_store
from .codes import _solve_codes, code_tiers, warn_unsolved
from .support_guess import supports_guess


@functools.partial(jax.jit, static_argnums=(1,))
def _top(Z, k: int):
    """The k largest codes of each row as (indices, values); unused slots get index 0, value 0."""
    vals, idx = jax.lax.top_k(Z, k)
    return jnp.where(vals > 0, idx, 0).astype(jnp.int32), jnp.where(vals > 0, vals, 0)


@jax.jit
def _largest_support(Z):
    """max_n #{k: z_nk > 0}, in one compiled program (not one dispatch per operation)."""
    return jnp.max(jnp.sum(Z > 0, axis=1), initial=0)


def _bucket(support: int, width: int) -> int:
    """Slots for a block whose largest support is ``support``: the next power of two, ≤ width."""
    return int(min(width, 1 << max(0, int(support) - 1).bit_length()))


def encode_store(
    atoms,
    b,
    X,
    lam,
    *,
    tol: float,
    max_steps: int,
    throw: bool,
    out: str | None,
    devices,
    block_rows: int | None,
    progress,
    shard: str = "rows",
):
    """``encode`` of a store in blocks; see ``encode`` (atoms, b, lam already checked)."""
    K, d = atoms.shape
    default = block_rows is None
    if default:
        block_rows = int(max(256, min(16384, (1 << 25) // max(K, d))))
    place = placement(devices, shard, K)
    multiple = 1 if place is None else place.row_multiple
    # with rows split, every device gets the same number of rows
    block_rows = -(-block_rows // multiple) * multiple
    store = as_store(X, chunk_rows=2 * block_rows)
    if default:  # a small store's blocks are not padded to a large block
        block_rows = block_cap(block_rows, store.n_rows, multiple)
    if store.n_features != d:
        raise ValueError(f"`atoms` has {d} features but `X` has {store.n_features}")
    if store.n_rows is None and out is not None:
        raise ValueError("encode(..., out=...) needs a source of known length, not an iterable")
    writer = None
    if out is not None:
        check_output_dir(out, name="out")
        fp = {
            "atoms": digest(atoms),
            "bias": digest(b),
            "lam": float(lam),
            "tol": float(tol),
            "max_steps": int(max_steps),
            "n_rows": int(store.n_rows),
            "n_features": int(d),
            "block_rows": int(block_rows),
            "source": store.fingerprint(),
        }
    dt = atoms.dtype
    ws = None  # sized from a guess of the supports of the store's first block (every run reads it)
    unplaced = atoms  # the guess reads these on the host, only when it is made
    spmd = place is not None and jax.process_count() > 1
    pad_row = np.asarray(b, dt)
    lam = jnp.asarray(lam, dt)
    b_dev, lam_dev = jnp.asarray(b, dt), lam
    z0 = jnp.zeros((block_rows, K), dt)  # cold start of every block (one buffer for all)
    if place is not None:
        (atoms,), (z0,) = place.atoms(atoms), place.codes(z0)
        b_dev, lam_dev = place.replicated(b_dev, lam_dev)
    by_rows = place.mesh if place is not None and place.axis == "rows" else None
    total = None if store.n_rows is None else -(-store.n_rows // block_rows)
    with dir_lock(out) if out is not None else contextlib.nullcontext():
        if out is not None:
            writer = CodeWriter(out, width=K, dtype=dt, n_rows=store.n_rows, fingerprint=fp)
        skip = writer.done_rows if writer is not None else 0
        bar = Progress(total or 0, f"encode K={K}", progress) if total else None
        parts, worst, start, done_blocks = [], 0.0, 0, 0
        try:
            for _, block in store.blocks():
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():  # (the solve would drop a NaN row's codes, not fail)
                    row = start + int(np.flatnonzero(~finite)[0])
                    raise ValueError(f"`X` contains NaN or Inf (row {row})")
                if ws is None:  # devices of several processes run one program: no local guess
                    guess = None if spmd else supports_guess(unplaced, pad_row, block, lam)
                    ws = code_tiers(K, None, guess)
                for s in range(0, block.shape[0], block_rows):
                    m = min(block_rows, block.shape[0] - s)
                    if start + m <= skip:  # written by an interrupted run
                        start += m
                        done_blocks += 1
                        continue
                    if start < skip:
                        raise ValueError(
                            f"{out!r} was written in other blocks; encode into a new directory"
                        )
                    xb = np.empty((block_rows, d), dt)
                    xb[:m] = block[s : s + m]
                    xb[m:] = pad_row
                    xj = jnp.asarray(xb)
                    if place is not None:
                        (xj,) = place.rows(xj)
                    sol = _solve_codes(
                        atoms, b_dev, xj, lam_dev, z0, tol, max_steps, ws, mesh=by_rows
                    )
                    kkt = float(sol.kkt)
                    rows = f"rows {start}..{start + m - 1}"
                    if sol.result == RESULTS.nonfinite:
                        raise ValueError(
                            f"`X` contains NaN or Inf, or the codes overflowed ({rows})"
                        )
                    if throw and kkt > tol:
                        raise RuntimeError(
                            f"encode: {RESULTS[sol.result]} in {rows} (KKT residual {kkt:.3g}·λ, tol {tol:g})"
                        )
                    worst = max(worst, kkt)
                    # pad rows (x = b) have zero codes: they change no support, and are cut
                    k = _bucket(int(_largest_support(sol.codes)), K)
                    idx, val = _top(sol.codes, k)
                    codes = SparseCodes(idx[:m], val[:m], K)
                    if writer is not None:
                        writer.append(codes)
                    else:
                        parts.append(codes)
                    start += m
                    done_blocks += 1
                    if bar is not None:
                        bar.update(done_blocks, kkt=kkt)
        finally:
            if bar is not None:
                bar.close()
    warn_unsolved(worst, tol, max_steps, stacklevel=5)
    if writer is not None:
        return load_codes(out)
    return concatenate(parts)
