"""Several fits of one width at once: the epoch of ``fit_dictionary`` vmapped over seeds.

Each seed has its own initial atoms (and key); they share X, λ and the options. A seed whose loss
stops decreasing (relative change ≤ tol) is frozen while the others go on; memory grows with the
number of seeds (S codes of N × K), so batch only where that fits.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, Int, PRNGKeyArray

from .._core.precision import full_precision
from .._core.results import RESULTS
from .._wide.solve import solve_wide
from .codes import row_supports
from .epochs import _Config, _epoch, _with_working_set, initial_state
from .fit import (
    DictionaryFit,
    _check_init_atoms,
    check_fit_inputs,
    check_momentum,
    finish_fit,
)
from .init import data_init

# one compiled program per configuration: the epoch of every seed at once
_epoch_seeds = eqx.filter_jit(eqx.filter_vmap(_epoch, in_axes=(None, 0, None, None, 0, None)))


def _select(keep, new, old):
    """Per seed: ``new`` where keep, else ``old`` (frozen seeds stay as they are)."""
    return jax.tree.map(
        lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old
    )


@full_precision
def fit_dictionary_seeds(
    X: Float[ArrayLike, "n_samples n_features"],
    n_atoms: int,
    lam: float,
    *,
    keys: PRNGKeyArray,
    inits: Float[ArrayLike, "n_seeds n_atoms n_features"] | None = None,
    init_bias: Float[ArrayLike, " n_features"] | None = None,
    parents: Int[ArrayLike, "n_seeds n_atoms"] | None = None,
    bias: bool = True,
    weights: Float[ArrayLike, " n_samples"] | None = None,
    max_epochs: int = 100,
    tol: float = 1e-6,
    atom_steps: int = 10,
    code_tol: float = 1e-4,
    code_steps: int = 500,
    resample_dead: bool = True,
    momentum: float = 0.8,
) -> list[DictionaryFit]:
    """``fit_dictionary`` (full batch) for ``len(keys)`` seeds in one vmapped program; returns one
    ``DictionaryFit`` per seed (``inits`` (S, K, d): per-seed initial atoms, else data-based)."""
    t_start = time.perf_counter()
    X, n_atoms, lam, w, max_epochs = check_fit_inputs(X, n_atoms, lam, weights, max_epochs)
    momentum = check_momentum(momentum)
    n, d = X.shape
    dt = X.dtype
    keys = jnp.asarray(keys)
    s = keys.shape[0]
    wide = solve_wide(X, lam, bias=bias, weights=w, throw=False)
    b0 = (
        jnp.asarray(init_bias, dt)
        if init_bias is not None
        else (wide.bias if bias else jnp.zeros(d, dt))
    )
    if b0.shape != (d,):
        raise ValueError(f"`init_bias` must have shape ({d},)")
    if inits is None:
        D0 = jnp.stack([data_init(X, b0, n_atoms, keys[i]) for i in range(s)])
    else:
        inits = np.asarray(inits)
        if inits.ndim != 3 or inits.shape[0] != s:
            raise ValueError(f"`inits` must have shape ({s}, {n_atoms}, {d})")
        D0 = jnp.stack([_check_init_atoms(a, n_atoms, d, dt) for a in inits])
    par = -jnp.ones((s, n_atoms), jnp.int32) if parents is None else jnp.asarray(parents, jnp.int32)
    if par.shape != (s, n_atoms):
        raise ValueError(f"`parents` must have shape ({s}, {n_atoms})")
    state = initial_state(D0, b0, n, max_epochs)
    cfg = _Config(lam, bias, None, atom_steps, code_tol, code_steps, resample_dead, momentum)
    wide_bound = wide.dual_objective
    active = np.ones(s, bool)
    prev = np.full(s, np.inf)
    for e in range(max_epochs):
        cfg = _with_working_set(cfg, row_supports(state.Z.reshape(s * n, n_atoms)), n_atoms, e)
        new = _epoch_seeds(cfg, state, X, w, keys, wide_bound)
        state = _select(jnp.asarray(active), new, state)
        loss = np.asarray(state.history.loss[:, e])
        active &= ~(prev - loss <= tol * np.abs(loss))
        prev = np.where(active, loss, prev)
        if not active.any():
            break
    cfg = _with_working_set(cfg, row_supports(state.Z.reshape(s * n, n_atoms)), n_atoms, max_epochs)
    pick = lambda i: jax.tree.map(lambda a: a[i], state)  # noqa: E731
    stops = [RESULTS.max_steps_reached if a else RESULTS.successful for a in active]
    return [finish_fit(cfg, pick(i), X, w, wide_bound, par[i], stops[i], t_start) for i in range(s)]
