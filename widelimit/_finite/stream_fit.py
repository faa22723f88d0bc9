"""``fit_dictionary`` on an ``ActivationStore``: online minibatch epochs over data larger than memory.

Each epoch reads the store once, block by block (blocks of a fixed number of minibatches, the last
one padded with rows of weight 0); the rows of a block are shuffled with
fold_in(fold_in(key, epoch), block) and each minibatch makes one ``minibatch_step``: codes from
zero, the sufficient statistics A = Σ βᵗ Zᵀ W Z (K × K) and B = Σ βᵗ Zᵀ W (X − b) (K × d) with
β = 1 − batch_size/N, the bias, the atoms. Memory is O(K² + K d) plus one block; no N × K codes are
kept. A checkpoint stores the state with its stream position (epoch, block), so a resumed fit
continues with the next block. The epoch's loss is the online one (each minibatch's loss at the
atoms it was coded with); the fit's final loss, codes and first-order residuals are exact, from one
encode pass (``encode``, sparse codes, to ``codes_dir`` when given) and one analysis pass.
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import checkpoint
from .._core.compile_clock import compile_seconds
from .._core.devices import replicate_tree, row_mesh, row_sharding
from .._core.lock import dir_lock
from .._core.objective import loss_from_sums, relative_gap, streamed_sums_of
from .._core.processes import from_first_process, max_over_processes, sum_over_processes
from .._core.progress import Progress
from .._core.results import RESULTS
from .._core.stationarity import first_order_from_sums, over_processes
from .._core.store import as_store, windows
from .._core.validate import check_lam, check_matrix, to_device
from .._wide.solve import solve_wide
from .codes import code_tiers, encode, tier_pair
from .epochs import History, _Config, minibatch_step
from .init import data_init
from .support_guess import supports_guess


class StreamState(eqx.Module):
    """What an online fit carries between blocks, with its position in the stream."""

    D: jax.Array
    b: jax.Array
    A: jax.Array
    B: jax.Array
    rsum: jax.Array
    count: jax.Array
    epoch: jax.Array  # epochs finished
    block: jax.Array  # blocks of the current epoch finished
    sums: jax.Array  # this epoch so far: (Σ w·loss_n, Σ w, Σ w·nnz_n)
    active: jax.Array  # this epoch so far: Σ codes per atom (dead atoms have 0)
    history: History


@eqx.filter_jit
def _block(cfg: _Config, s: StreamState, X, w, key, beta, mesh=None):
    """The minibatches of one block (rows shuffled by ``key``), as one ``lax.scan``; with
    ``mesh``, each minibatch's codes are solved over its devices (``_batch_codes``)."""
    bs = cfg.batch_size
    perm = jax.random.permutation(key, X.shape[0]).reshape(-1, bs)

    def step(carry, idx):
        stats, sums, active = carry
        Xb, wb = X[idx], w[idx]
        D, b = stats[0], stats[1]
        stats, Zb, _ = minibatch_step(
            cfg, beta, stats, Xb, wb, jnp.zeros((bs, D.shape[0]), X.dtype), mesh
        )
        r = Xb - b - Zb @ D
        per_row = 0.5 * jnp.sum(r * r, axis=1) + cfg.lam * jnp.sum(Zb, axis=1)
        sums = sums + jnp.stack([wb @ per_row, jnp.sum(wb), wb @ jnp.sum(Zb > 0, axis=1)])
        return (stats, sums, active + wb @ Zb), None

    stats = (s.D, s.b, s.A, s.B, s.rsum, s.count)
    (stats, sums, active), _ = jax.lax.scan(step, (stats, s.sums, s.active), perm)
    D, b, A, B, rsum, count = stats
    return eqx.tree_at(
        lambda t: (t.D, t.b, t.A, t.B, t.rsum, t.count, t.block, t.sums, t.active),
        s,
        (D, b, A, B, rsum, count, s.block + 1, sums, active),
    )


def _padded(blocks, n_blocks: int, shape, dt):
    """``blocks`` followed by blocks of zero weight up to ``n_blocks`` (processes with fewer
    rows take the same steps as the others)."""
    i = -1
    for i, xb, wb in blocks:
        yield i, xb, wb
    for j in range(i + 1, n_blocks):
        yield j, np.zeros(shape, dt), np.zeros(shape[0], dt)


def _blocks(store, rows: int, dt):
    """(block index, padded X block, weights) of fixed shape (rows, d); zero weight pads."""
    w_all = store.weights
    for index, buf, filled in windows(store, rows, store.n_features, dt):
        w = np.zeros(rows, dt)
        w[:filled] = 1 if w_all is None else w_all[index * rows : index * rows + filled]
        yield index, buf, w


def _local(tree):
    """A tree of (possibly multi-process, replicated) arrays as this process's own arrays."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)


def fit_store(X, width, lam, *, key, solver, init, init_bias, parents, callback, checkpoint_dir,
              checkpoint_every, progress, throw, codes_dir, block_rows, distributed=False,
              devices=None):  # fmt: skip
    """``fit_dictionary`` of a store; see there. ``solver.batch_size`` is required."""
    from .fit import DictionaryFit, check_init_bias, start_bias

    t_start = (time.perf_counter(), compile_seconds())
    if solver.batch_size is None:
        raise ValueError("a store is fitted in minibatches: pass batch_size=...")
    store = as_store(X)
    if store.n_rows is None:
        raise ValueError("fit_dictionary needs a store of known length (not an iterable)")
    n, d = store.n_rows, store.n_features
    bs = solver.batch_size
    procs, mesh = 1, None
    if distributed and devices is not None:
        raise ValueError("a distributed fit uses every device of every process: drop `devices`")
    if distributed:
        procs, mesh = jax.process_count(), row_mesh("all")
        n = int(sum_over_processes(np.asarray([n]))[0])  # all processes' rows
    elif devices is not None:  # one process: the minibatches split over these devices
        mesh = row_mesh(devices)
    if mesh is not None and bs % mesh.devices.size:
        raise ValueError(f"`batch_size` = {bs} does not split over {mesh.devices.size} devices")
    if bs > n:
        raise ValueError(f"`batch_size` ({bs}) exceeds the number of samples ({n})")
    dt = jnp.result_type(jnp.dtype(store.dtype), jnp.float32)
    dt = jnp.float64 if dt == jnp.float64 else jnp.float32
    lam = check_lam(lam, dt)
    rows = bs * max(1, (block_rows or 16384) // bs)
    rows = min(rows, bs * -(-n // bs))  # a block of all processes' rows; this process's share:
    local_rows = rows // procs
    n_blocks = -(-store.n_rows // local_rows)
    if distributed:  # every process takes the same steps (zero-weight blocks where it has none)
        n_blocks = int(max_over_processes(np.asarray([n_blocks]))[0])
    first = check_matrix(np.asarray(next(store.pools(min(n, 16384)))), "X")
    if init is not None:
        init = jnp.asarray(init, dt)
        if init.shape != (width, d):
            raise ValueError(f"`init` must have shape {(width, d)}, got {tuple(init.shape)}")
    init_bias = check_init_bias(init_bias, d, dt)
    fp = None  # only a checkpoint needs it (an array store's is a SHA-256 of every byte)
    if checkpoint_dir is not None:
        fp = checkpoint.fingerprint(
            first, key=key, width=width, lam=float(lam), init=init, init_bias=init_bias,
            source=store.fingerprint(), block_rows=rows, **solver.fingerprint(),
        )  # fmt: skip
    # process 0 of a distributed fit writes the checkpoint that all processes read
    fp, writer = checkpoint.of_job(fp, distributed)

    def save(state):
        if checkpoint_dir is not None and writer:
            checkpoint.save(checkpoint_dir, state, {"fingerprint": fp}, max_epochs)

    cfg = _Config(
        lam, solver.fit_bias, bs, solver.atom_steps, solver.code_tol, solver.code_steps, False,
    )  # fmt: skip
    max_epochs = solver.max_epochs
    with dir_lock(checkpoint_dir if writer else None):
        wide = solve_wide(
            store, lam, fit_bias=solver.fit_bias, throw=False, distributed=distributed
        )
        b0 = jnp.asarray(start_bias(wide, init_bias, solver.fit_bias), dt)
        D0 = data_init(first.astype(dt), b0, width, key) if init is None else init
        if distributed:  # process 0's start
            D0 = jnp.asarray(from_first_process(D0), dt)
        # per-point working sets past 64 atoms, fixed for the fit from the guessed supports of
        # its first codes (``first_tiers``, as a fit in memory starts)
        ws = code_tiers(width, None, supports_guess(D0, b0, first, lam))
        if distributed and ws is not None:  # each guesses from its rows; one program: the largest
            ws = tier_pair(int(max_over_processes(np.asarray([ws[0]]))[0]), ws[-1])
        cfg = dataclasses.replace(cfg, ws=ws)

        def everywhere(tree):  # on every device of the mesh (every process's), or as it is
            return tree if mesh is None else replicate_tree(mesh, tree)

        def glob(a):  # this process's rows of one block of all processes' rows, split over devices
            if mesh is None:
                return jnp.asarray(a)
            return jax.make_array_from_process_local_data(row_sharding(mesh, a.ndim), a)

        z = lambda *shape: to_device(np.zeros(shape, np.dtype(dt)), dt)  # noqa: E731
        cap = checkpoint.saved_capacity(checkpoint_dir) or max_epochs  # a resume's history
        nanv = to_device(np.full(cap, np.nan, np.dtype(dt)), dt)
        negi = to_device(np.full(cap, -1, np.int32), np.int32)
        state = StreamState(
            D0, b0, z(width, width), z(width, d), z(d), z(), jnp.asarray(0, jnp.int32),
            jnp.asarray(0, jnp.int32), z(3), z(width), History(nanv, nanv, nanv, negi, negi),
        )  # fmt: skip
        loaded, _ = checkpoint.load(checkpoint_dir, state, fp)
        state = loaded if loaded is not None else state
        state = everywhere(
            eqx.tree_at(lambda t: t.history, state, state.history.resized(max_epochs))
        )
        beta = everywhere(jnp.asarray(1 - bs / n, dt))
        bar = Progress(max_epochs, f"fit_dictionary K={width} (stream)", progress)
        result = RESULTS.max_steps_reached
        losses = np.asarray(state.history.loss)
        since = 0
        while int(state.epoch) < max_epochs:
            e = int(state.epoch)
            ekey = jax.random.fold_in(key, e)
            blocks = _blocks(store, local_rows, np.dtype(dt))
            for i, xb, wb in _padded(blocks, n_blocks, (local_rows, d), np.dtype(dt)):
                if i < int(state.block):
                    continue  # finished before the interruption
                if not np.all(np.isfinite(xb)):
                    raise ValueError(f"`X` contains NaN or Inf (block {i} of epoch {e})")
                bkey = everywhere(jax.random.fold_in(ekey, i))
                state = _block(cfg, state, glob(xb), glob(wb), bkey, beta, mesh)
                since += 1
                if since % checkpoint_every == 0:
                    save(state)
            loss_sum, wsum, nnz = (float(v) for v in state.sums)
            loss = loss_sum / wsum
            h = state.history

            def put(a, v, e=e):
                return a.at[e].set(v)

            h = History(
                put(h.loss, loss),
                put(h.gap, relative_gap(loss - wide.dual_objective, wide.dual_objective)),
                put(h.l0, nnz / wsum),
                put(h.dead, jnp.sum(state.active <= 0, dtype=jnp.int32)),
                put(h.resampled, 0),
            )
            state = everywhere(
                eqx.tree_at(
                    lambda t: (t.epoch, t.block, t.sums, t.active, t.history),
                    state,
                    (
                        state.epoch + 1,
                        jnp.asarray(0, jnp.int32),
                        z(3),
                        z(width),
                        _local(h) if mesh is not None else h,
                    ),  # fmt: skip
                )
            )
            save(state)
            losses = np.asarray(h.loss)
            bar.update(e + 1, loss=loss)
            if callback is not None:
                callback(e + 1, h.trimmed(e + 1))
            if not np.isfinite(loss):
                result = RESULTS.nonfinite
                break
            if e >= 1 and losses[e - 1] - loss <= solver.loss_tol * abs(loss):
                result = RESULTS.successful
                break
        bar.close()
        if mesh is not None:
            state = _local(state)
        D, b = state.D, state.b
        codes = encode(D, b if solver.fit_bias else None, store, lam, tol=solver.code_tol,
                       sparse=True, out=codes_dir, progress=False, devices=devices)  # fmt: skip
        sums, _ = streamed_sums_of(store, D, codes, b, lam)
        sums = over_processes(sums) if distributed else sums
        kkt, _, stat, _, bres, _ = first_order_from_sums(sums, D, lam, solver.fit_bias)
        loss = jnp.asarray(loss_from_sums(sums, lam), dt)
        if not (np.isfinite(float(loss)) and bool(jnp.all(jnp.isfinite(D)))):
            result = RESULTS.nonfinite
        fit = DictionaryFit(
            atoms=D, bias=b, codes=codes, loss=loss, wide_bound=wide.dual_objective, lam=lam,
            history=state.history, n_epochs=state.epoch,
            parents=to_device(np.full(width, -1, np.int32) if parents is None else parents, np.int32),
            fit_bias=solver.fit_bias, result=result, code_kkt=kkt,
            atom_stationarity=jnp.max(stat, initial=0.0), bias_residual=bres,
            seconds=time.perf_counter() - t_start[0], compile_seconds=compile_seconds() - t_start[1],
            resumed_from=int(loaded.epoch) if loaded is not None else 0,
        )  # fmt: skip
    if throw and not fit.converged:
        raise RuntimeError(f"fit_dictionary (K = {width}): {RESULTS[fit.result]}")
    return fit
