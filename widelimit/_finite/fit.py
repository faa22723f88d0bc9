"""Finite-width dictionary learning (SPEC §1, §3): ``fit_dictionary`` and ``DictionaryFit``.

The fit loop: validation, the wide-limit bound and bias, data-based initial atoms
(``_data_init``), epochs (``_epochs``) with progress, callbacks and checkpoints, and the final
exact codes (``finish_fit``).
"""

from __future__ import annotations

import dataclasses
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import checkpoint
from .._core.compile_clock import compile_seconds
from .._core.lock import dir_lock
from .._core.objective import loss_value as _loss
from .._core.objective import relative_gap
from .._core.precision import full_precision
from .._core.progress import Progress
from .._core.results import RESULTS
from .._core.row_buckets import cut_rows, pad_rows, padded_rows
from .._core.stationarity import first_order_residuals
from .._core.store import is_store_like
from .._core.validate import (
    all_finite,
    check_lam,
    check_matrix,
    check_positive_int,
    check_weights,
    max_abs,
    to_device,
)
from .._wide.solve import solve_wide
from .atoms import normalise_rows
from .buckets import pad_atoms, pad_parents, unpad_fit, width_bucket
from .epochs import History, _Config, _encode_and_accept, _State, initial_state
from .init import data_init
from .solver import DictionarySolver, solver_of


class DictionaryFit(eqx.Module):
    """A fitted dictionary: atoms (width, n_features) with unit rows, bias, exact codes.

    ``loss`` is L(atoms, codes, bias); ``wide_bound`` the certified wide-limit lower bound W_low, so
    ``gap`` = (loss − wide_bound)/|wide_bound| is the certified relative gap to the wide limit
    (``gap_abs`` = loss − wide_bound). ``parents[k]`` is the index
    of the atom that atom k was split from (−1 for none).

    ``result`` says how the fit ended: ``RESULTS.successful`` (the first-order conditions hold to
    the solver's ``tol``; with ``stop="loss"``, the relative loss decrease fell to ``loss_tol``),
    ``max_steps_reached`` (``max_epochs`` ran out first), ``stalled`` (the polish could not lower L
    further before the conditions held) or ``nonfinite``.
    ``code_kkt``, ``atom_stationarity`` and ``bias_residual`` are the final first-order residuals
    (worst entry / worst atom, in units of λ; SPEC §4); ``seconds`` the call's wall time, of
    which ``compile_seconds`` compiling (JAX's monitoring events; process-wide);
    ``resumed_from`` the epoch a checkpointed fit resumed at (0 for a fresh one).
    """

    atoms: Float[Array, "width n_features"]
    bias: Float[Array, " n_features"]
    codes: Float[Array, "n_samples width"]
    loss: Float[Array, ""]
    wide_bound: Float[Array, ""]
    lam: Float[Array, ""]
    history: History
    n_epochs: Int[Array, ""]
    parents: Int[Array, " width"]
    fit_bias: bool = eqx.field(static=True, default=True)
    result: RESULTS = eqx.field(default_factory=lambda: RESULTS.successful)
    code_kkt: Float[Array, ""] | float = float("nan")
    atom_stationarity: Float[Array, ""] | float = float("nan")
    bias_residual: Float[Array, ""] | float = float("nan")
    seconds: float = float("nan")
    compile_seconds: float = float("nan")
    resumed_from: int = 0

    @property
    def converged(self) -> bool:
        """True when the fit stopped on its tolerance (not at ``max_epochs``, not non-finite)."""
        return bool(self.result == RESULTS.successful)

    def stationary(self, tol: float = 1e-3) -> bool:
        """Whether the first-order conditions hold to ``tol`` (units of λ, ``check_optimality``'s
        default): code KKT, atom stationarity and, with a bias, the bias residual (SPEC §4,
        conditions 1–3; the hull condition is ``check_optimality``'s). A fit stopped by its loss
        rule (``converged``) can still fail them."""
        ok = float(self.code_kkt) <= tol and float(self.atom_stationarity) <= tol
        return bool(ok and (not self.fit_bias or float(self.bias_residual) <= tol))

    @property
    def gap_abs(self):
        return self.loss - self.wide_bound

    @property
    def gap(self):
        return relative_gap(self.gap_abs, self.wide_bound)


def _check_init_atoms(init, width, d, dtype):
    init = check_matrix(init, "init")
    if init.shape != (width, d):
        raise ValueError(
            f"`init` must have shape (width, n_features) = ({width}, {d}), got {tuple(init.shape)}"
        )
    if not bool(np.all(np.any(np.asarray(init) != 0, axis=1))):
        raise ValueError("`init` has zero rows; every atom needs a direction")
    return normalise_rows(init.astype(dtype))


@full_precision
def fit_dictionary(
    X: Float[ArrayLike, "n_samples n_features"],
    width: int,
    lam: float,
    *,
    key: PRNGKeyArray,
    solver: DictionarySolver | None = None,
    init: Float[ArrayLike, "width n_features"] | None = None,
    init_bias: Float[ArrayLike, " n_features"] | None = None,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    parents: Int[ArrayLike, " width"] | None = None,
    callback=None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 5,
    progress: bool | None = None,
    throw: bool = False,
    codes_dir: str | None = None,
    block_rows: int | None = None,
    distributed: bool = False,
    devices=None,
    **options,
) -> DictionaryFit:
    """Learn D (unit rows), b and Z ≥ 0 minimising L = (1/2N)Σ w||x − b − Dz||² + (λ/N)Σ w||z||₁.

    Drives ``solver`` (a ``DictionarySolver``; or one built from keyword ``options`` such as
    ``fit_bias``, ``max_epochs``, ``tol``, ``loss_tol``, ``stop``, ``batch_size``, ``code_tol``,
    ``momentum``) epoch by epoch until it terminates: by default (full batch) alternating epochs
    until the relative loss decrease ≤ ``loss_tol``, then the polish until code KKT, atom
    stationarity and bias ≤ ``tol`` (units of λ); the fit's ``result`` says why it stopped
    (``throw=True`` raises unless it converged). The returned codes are exact for the returned atoms and bias (to ``code_tol``).
    With ``checkpoint_dir`` the state is saved atomically every ``checkpoint_every`` epochs and a
    rerun with the same directory resumes (an interruption loses at most one interval). Without
    ``init``, the atoms start from a weighted spherical k-means of the data directions around the
    wide-limit bias (``data_init``: k-means++ seeding and two Lloyd steps), derived from ``key``.
    A small X (N·max(d, K) ≤ 2²⁰, full batch) runs with its rows padded to a bucket by copies of
    row 0 of weight 0 (``_core.row_buckets``): a new N in the bucket compiles nothing, and the fit
    is the unpadded one.

    Out of core: X may be an ``ActivationStore`` or anything it reads (a memmap is an array here).
    The fit then runs online minibatch epochs (``batch_size`` required) over blocks of
    ``block_rows`` rows (default 16384), keeping the sufficient statistics A = ZᵀWZ and
    B = ZᵀW(X − b) (O(K² + Kd) memory, never N × K; A is dense: 4K² bytes in float32, 17 GB at
    K = 65,536); a checkpoint stores the stream position, so
    a resumed fit continues with the next block. The history's losses are the online ones; the
    returned codes are ``SparseCodes`` (a ``CodeStore`` in ``codes_dir`` when given), exact for
    the returned atoms and bias, and the loss and residuals are computed from them.

    ``distributed=True`` (a store of this process's rows, ``ActivationStore(...).part()``, in a
    ``jax.distributed`` run): block i of an epoch is the i-th blocks of all processes together,
    one global array over every device, and each minibatch of ``batch_size`` rows (divisible by
    the devices) is drawn from it, so the fit equals one process holding those blocks; atoms
    start from process 0's, the loss and residuals are summed over processes, and each process
    gets the codes of its own rows. ``devices`` (``"all"`` or a list; one process) splits each
    minibatch's rows over those devices in the same way, parameters replicated; the fit equals one
    device's, and its final codes are encoded over the devices too. A distributed fit checkpoints
    into a ``checkpoint_dir`` that every process sees (a shared filesystem): process 0 writes it,
    every process resumes from it, and a resume with other rows or options on any process is
    refused.
    """
    t_start = (time.perf_counter(), compile_seconds())
    solver = solver_of(solver, options)
    if is_store_like(X):
        from .stream_fit import fit_store

        if weights is not None:
            raise ValueError("weights of a store go to ActivationStore(..., weights=...)")
        return fit_store(
            X, check_positive_int(width, "width"), lam, key=key, solver=solver, init=init,
            init_bias=init_bias, parents=parents, callback=callback,
            checkpoint_dir=checkpoint_dir, checkpoint_every=check_positive_int(
                checkpoint_every, "checkpoint_every"), progress=progress, throw=throw,
            codes_dir=codes_dir, block_rows=block_rows, distributed=distributed, devices=devices,
        )  # fmt: skip
    if codes_dir is not None or block_rows is not None or distributed or devices is not None:
        raise ValueError(
            "`codes_dir`, `block_rows`, `distributed` and `devices` are for a store X (data out of"
            " core; an array in memory streams as ActivationStore(X))"
        )
    X, width, lam, w = check_fit_inputs(X, width, lam, weights)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    n, d = X.shape
    dt = X.dtype
    if solver.batch_size is not None and solver.batch_size > n:
        raise ValueError(f"`batch_size` ({solver.batch_size}) exceeds the number of samples ({n})")
    if init is not None:
        init = _check_init_atoms(init, width, d, dt)
    if parents is None:
        parents = np.full(width, -1, np.int32)
    elif np.shape(parents) != (width,):
        raise ValueError(f"`parents` must have shape ({width},)")
    # a small X's rows padded to a bucket with weight 0 (``row_buckets``): a new N compiles nothing
    nb = padded_rows(X, width=width) if solver.batch_size is None else None
    fp = None  # only a checkpoint needs it (a SHA-256 of every byte of X: 1 s per GB)
    if checkpoint_dir is not None:
        fp = checkpoint.fingerprint(
            X, key=key, width=width, lam=float(lam),
            weights=None if weights is None else np.asarray(w), init=init, init_bias=init_bias,
            **solver.fingerprint(), **({} if nb is None else {"rows_padded_to": nb}),
        )  # fmt: skip
    if nb is not None:
        X, w = pad_rows(X, nb), pad_rows(w, nb, fill=0)
    init_bias = check_init_bias(init_bias, d, dt)
    scale, X, lam, init_bias = rescaled(X, lam, init_bias)
    callback = unscaled_callback(callback, scale)
    max_epochs = solver.max_epochs
    with dir_lock(checkpoint_dir):  # after validation: a bad call creates nothing
        wide = solve_wide(X, lam, fit_bias=solver.fit_bias, weights=w, throw=False)
        b0 = start_bias(wide, init_bias, solver.fit_bias)
        real = X if nb is None else np.asarray(X)[:n]  # (a padded X is small)
        D0 = data_init(real, b0, width, key) if init is None else init
        kb = width_bucket(width)  # zero atoms up to the bucket: programs shared across widths
        D0, parents = pad_atoms(D0, kb), pad_parents(parents, kb)
        cap = checkpoint.saved_capacity(checkpoint_dir) or max_epochs
        state = initial_state(D0, b0, X.shape[0], cap)
        loaded, _ = checkpoint.load(checkpoint_dir, state, fp)
        state = loaded if loaded is not None else state
        state = eqx.tree_at(lambda s: s.history, state, state.history.resized(max_epochs))
        if checkpoint_dir is not None and loaded is None:
            checkpoint.save(checkpoint_dir, state, {"fingerprint": fp}, max_epochs)
        fs = solver.init(state, lam, wide.dual_objective)
        bar = Progress(max_epochs, f"fit_dictionary K={width}", progress)
        while not solver.terminate(fs)[0]:
            fs = solver.step(fs, X, w, key)
            e = fs.epoch
            bar.update(
                e, loss=fs.prev * scale * scale, gap=float(np.asarray(fs.state.history.gap)[e - 1])
            )
            if callback is not None:
                callback(e, fs.state.history.trimmed(e))
            if checkpoint_dir is not None and (e % checkpoint_every == 0 or e == max_epochs):
                checkpoint.save(checkpoint_dir, fs.state, {"fingerprint": fp}, max_epochs)
        if checkpoint_dir is not None:
            checkpoint.save(checkpoint_dir, fs.state, {"fingerprint": fp}, max_epochs)
        bar.close()
        cfg = solver.final_config(fs, dt)
        stop = solver.terminate(fs)[1]
        fit = finish_fit(cfg, fs.state, X, w, fs.wide_bound, parents, stop, t_start)
        fit = unscale_fit(unpad_fit(fit, width), scale)
        fit = dataclasses.replace(fit, codes=cut_rows(fit.codes, n))
        if loaded is not None:
            fit = dataclasses.replace(fit, resumed_from=int(loaded.epoch))
        if throw and not fit.converged:
            raise RuntimeError(f"fit_dictionary (K = {width}): {RESULTS[fit.result]}")
        return fit


def rescaled(X, lam, init_bias):
    """(s, X/s, λ/s, init_bias/s) with s = 1, or the power of two near max |x| when that is outside
    [2⁻³², 2³²]: the fit then runs on exactly rescaled data and ``unscale_fit`` maps it back, so
    that no pass squares (or takes fourth powers of) numbers near the dtype's overflow or
    underflow."""
    big = max_abs(X)
    if big == 0 or 2.0**-32 <= big <= 2.0**32:
        return 1.0, X, lam, init_bias
    s = float(2.0 ** np.ceil(np.log2(big)))
    return s, X / s, lam / s, None if init_bias is None else init_bias / s


def unscale_fit(fit: DictionaryFit, s: float) -> DictionaryFit:
    """A fit of (X/s, λ/s) as the fit of (X, λ): b, Z and λ times s, losses times s² (the atoms
    and every residual, which are ratios, unchanged); ``RESULTS.out_of_range`` when L or its bound
    then overflows the dtype."""
    if s == 1.0:
        return fit
    h = fit.history
    loss, bound = fit.loss * s * s, fit.wide_bound * s * s
    in_range = bool(jnp.isfinite(loss) & jnp.isfinite(bound))
    return dataclasses.replace(
        fit, bias=fit.bias * s, codes=fit.codes * s, loss=loss, wide_bound=bound, lam=fit.lam * s,
        history=dataclasses.replace(h, loss=h.loss * s * s),
        result=fit.result if in_range else RESULTS.out_of_range,
    )  # fmt: skip


def unscaled_callback(callback, s: float):
    """``callback(epoch, history)`` seeing losses in the units of X."""
    if callback is None or s == 1.0:
        return callback
    return lambda e, h: callback(e, h | {"loss": h["loss"] * s * s})


def check_init_bias(init_bias, d: int, dtype):
    """``init_bias`` as an array of shape (d,), or None."""
    if init_bias is None:
        return None
    init_bias = jnp.asarray(init_bias, dtype)
    if init_bias.shape != (d,):
        raise ValueError(f"`init_bias` must have shape ({d},)")
    return init_bias


def start_bias(wide, init_bias, fit_bias: bool):
    """The first epoch's bias: ``init_bias``, else the wide limit's (its Huber location), or 0
    without a bias."""
    if init_bias is not None:
        return init_bias
    return wide.bias if fit_bias else jnp.zeros_like(wide.bias)


def check_fit_inputs(X, width, lam, weights):
    """Validated (X, width, λ, normalised weights) of a fit."""
    width = check_positive_int(width, "width")
    X = check_matrix(X, "X")
    lam = check_lam(lam, X.dtype)
    return X, width, lam, check_weights(weights, X.shape[0], X.dtype)


_loss_jit = jax.jit(_loss)


def finish_fit(
    cfg: _Config, state: _State, X, w, wide_bound, parents, stop=None, t_start=None
) -> DictionaryFit:
    """The fit from a final state. Full-batch states hold exact codes for their atoms and bias,
    except after a rejected extrapolation; those and minibatch codes are re-encoded (and kept if
    better)."""
    lam = cfg.lam
    rejected = cfg.momentum and int(state.epoch) > 1 and not bool(state.extrapolate)
    loose = cfg.epoch_tol is not None and float(cfg.epoch_tol) > cfg.code_tol
    if cfg.batch_size is not None or rejected or loose:  # codes to code_tol, kept if better
        exact = dataclasses.replace(cfg, epoch_tol=to_device(cfg.code_tol, X.dtype))
        fresh = to_device(np.zeros(state.D.shape[0], np.bool_), np.bool_)
        D, Z, b = state.D, state.Z, state.b
        new, loss, _ = _encode_and_accept(exact, state, X, w, D, Z, b, D, fresh, wide_bound)
        Z = new.Z
    else:
        Z, loss = state.Z, _loss_jit(X, state.D, state.Z, state.b, lam, w)
    kkt, _, stat, _, bres, _, _ = first_order_residuals(
        X, state.D, Z, state.b, lam, w, cfg.fit_bias
    )
    if stop is None:
        stop = RESULTS.successful
    if not (math.isfinite(float(loss)) and all_finite(state.D)):
        stop = RESULTS.nonfinite
    return DictionaryFit(
        atoms=state.D,
        bias=state.b,
        codes=Z,
        loss=loss,
        wide_bound=wide_bound,
        lam=lam,
        history=state.history,
        n_epochs=state.epoch,
        parents=to_device(parents, np.int32),
        fit_bias=cfg.fit_bias,
        result=stop,
        code_kkt=kkt,
        atom_stationarity=_max0(stat),
        bias_residual=bres,
        seconds=float("nan") if t_start is None else time.perf_counter() - t_start[0],
        compile_seconds=float("nan") if t_start is None else compile_seconds() - t_start[1],
    )


_max0 = jax.jit(lambda a: jnp.max(a, initial=0.0))
