"""Several fits of one width at once: ``DictionarySolver``'s epoch vmapped over seeds.

Each seed has its own initial atoms (and key); they share X, λ and the solver. A seed whose loss
stops decreasing (relative change ≤ loss_tol) is frozen while the others go on; memory grows with
the number of seeds (S codes of N × K), so batch only where that fits. With the stop rule
``"conditions"`` each seed is then polished on its own (``polish``) until its conditions hold.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, Int, PRNGKeyArray

from .._core.compile_clock import compile_seconds
from .._core.precision import full_precision
from .._core.results import RESULTS
from .._wide.solve import solve_wide
from .buckets import pad_atoms, pad_parents, unpad_fit, width_bucket
from .epochs import initial_state
from .fit import (
    DictionaryFit,
    _check_init_atoms,
    check_fit_inputs,
    check_init_bias,
    finish_fit,
    rescaled,
    start_bias,
    unscale_fit,
)
from .init import data_init
from .solver import DictionarySolver, solver_of


@full_precision
def fit_dictionary_seeds(
    X: Float[ArrayLike, "n_samples n_features"],
    width: int,
    lam: float,
    *,
    keys: PRNGKeyArray,
    solver: DictionarySolver | None = None,
    inits: Float[ArrayLike, "n_seeds width n_features"] | None = None,
    init_bias: Float[ArrayLike, " n_features"] | None = None,
    parents: Int[ArrayLike, "n_seeds width"] | None = None,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    callback=None,
    **options,
) -> list[DictionaryFit]:
    """``fit_dictionary`` (full batch) for ``len(keys)`` seeds in one vmapped program; returns one
    ``DictionaryFit`` per seed (``inits`` (S, K, d): per-seed initial atoms, else data-based).
    ``solver`` (or keyword ``options``) as in ``fit_dictionary``; ``batch_size`` must be None.
    ``callback(epoch, losses)`` after each epoch (``losses``: the seeds' last losses)."""
    t_start = (time.perf_counter(), compile_seconds())
    solver = solver_of(solver, options)
    if solver.batch_size is not None:
        raise ValueError(
            "fit_dictionary_seeds fits full batch: the solver's `batch_size` must be None"
        )
    X, width, lam, w = check_fit_inputs(X, width, lam, weights)
    n, d = X.shape
    dt = X.dtype
    keys = jnp.asarray(keys)
    s = keys.shape[0]
    init_bias = check_init_bias(init_bias, d, dt)
    scale, X, lam, init_bias = rescaled(X, lam, init_bias)
    wide = solve_wide(X, lam, fit_bias=solver.fit_bias, weights=w, throw=False)
    b0 = start_bias(wide, init_bias, solver.fit_bias)
    if inits is None:
        D0 = jnp.stack([data_init(X, b0, width, keys[i]) for i in range(s)])
    else:
        inits = np.asarray(inits)
        if inits.ndim != 3 or inits.shape[0] != s:
            raise ValueError(f"`inits` must have shape ({s}, {width}, {d})")
        D0 = jnp.stack([_check_init_atoms(a, width, d, dt) for a in inits])
    par = -jnp.ones((s, width), jnp.int32) if parents is None else jnp.asarray(parents, jnp.int32)
    if par.shape != (s, width):
        raise ValueError(f"`parents` must have shape ({s}, {width})")
    kb = width_bucket(width)  # zero atoms up to the bucket, as fit_dictionary
    D0, par = pad_atoms(D0, kb), pad_parents(par, kb)
    fs = solver.init(initial_state(D0, b0, n, solver.max_epochs), lam, wide.dual_objective)
    while not solver.terminate(fs)[0]:
        fs = solver.step(fs, X, w, keys)
        if callback is not None:
            callback(fs.epoch, np.asarray(fs.state.history.loss[:, fs.epoch - 1]) * scale * scale)
    cfg = solver.final_config(fs, dt)
    stops = solver.terminate(fs)[1]
    fits = []
    for i in range(s):
        state, cfg_i, stop = jax.tree.map(lambda a: a[i], fs.state), cfg, stops[i]  # noqa: B023
        if solver.stop_rule == "conditions" and stop == RESULTS.successful:
            one = solver.init(state, lam, fs.wide_bound)  # the loss rule fired: the polish
            while not solver.terminate(one)[0]:
                one = solver.step(one, X, w, keys[i])
            state, stop, cfg_i = one.state, solver.terminate(one)[1], solver.final_config(one, dt)
        fit = finish_fit(cfg_i, state, X, w, fs.wide_bound, par[i], stop, t_start)
        fits.append(unscale_fit(unpad_fit(fit, width), scale))
    return fits
