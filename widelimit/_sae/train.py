"""One training loop for every SAE architecture: minibatch ``optimizer`` steps on the model's own
``loss``, each followed by its ``after_step`` (unit decoder rows; BatchTopK moves its threshold).

Initialisation (all architectures): decoder rows at data directions from b_dec, encoder tied to the
decoder, encoder biases 0; b_dec starts at the wide-limit bias (the Huber location, ``"wide"``) or
the geometric median (``"median"``). JumpReLU thresholds start at √(2λ), the point where a unit atom's
code z gains z²/2 of reconstruction for its L0 cost λ.
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import checkpoint
from .._core.devices import replicate_tree, row_mesh, row_sharding
from .._core.lock import dir_lock
from .._core.precision import full_precision
from .._core.processes import from_first_process, max_over_processes
from .._core.progress import Progress
from .._core.results import RESULTS
from .._core.store import as_store, is_store_like
from .._core.validate import all_finite, check_lam, check_matrix, check_positive_int, to_device
from .._finite.atoms import normalise_rows
from .._wide.solve import solve_wide
from .base import AbstractSAE
from .batchtopk import BatchTopKSAE, MatryoshkaSAE
from .gated import GatedSAE
from .jumprelu import JumpReLUSAE
from .standard import ReluSAE
from .topk import AbsTopKSAE, TopKSAE

# architecture name → (class, needs λ, needs k)
ARCHITECTURES = {
    "standard": (ReluSAE, True, False),
    "topk": (TopKSAE, False, True),
    "abstopk": (AbsTopKSAE, False, True),
    "batchtopk": (BatchTopKSAE, False, True),
    "matryoshka_batchtopk": (MatryoshkaSAE, False, True),
    "jumprelu": (JumpReLUSAE, True, False),
    "gated": (GatedSAE, True, False),
}
_ALIASES = {"relu": "standard", "matryoshka": "matryoshka_batchtopk"}


class SAETraining(NamedTuple):
    """What ``train_sae`` returns: the model, the per-step minibatch losses, the wall time (s,
    compilation included), how it ended (``RESULTS.successful``, or ``nonfinite`` when a loss or a
    parameter stopped being finite: training stops there, ``sae`` is the model after the last
    finite chunk and the losses after it are NaN) and the
    step a checkpointed run resumed from (0 for a fresh run)."""

    sae: AbstractSAE
    losses: Float[Array, " steps"]
    seconds: float
    result: RESULTS = RESULTS.successful
    resumed_from: int = 0


def default_widths(width: int) -> tuple[int, ...]:
    """Matryoshka prefixes width/8, width/4, width/2, width (those ≥ 1, distinct)."""
    return tuple(sorted({max(1, width // f) for f in (8, 4, 2)} | {width}))


@functools.partial(jax.jit, static_argnums=3)
def _decoder_at_data(X, b_dec, key, width: int):
    """``width`` unit rows at data points x − b_dec (with 1 % noise), drawn with ``key``."""
    n, d = X.shape
    idx = jax.random.choice(key, n, (width,), replace=width > n)
    noise = 1e-2 * jax.random.normal(jax.random.fold_in(key, 1), (width, d), X.dtype)
    return normalise_rows(X[idx] - b_dec + noise * jnp.std(X))


@jax.jit
def _median_distance(X):
    """The median of ||x_n − x̄||."""
    return jnp.median(jnp.linalg.norm(X - jnp.mean(X, 0), axis=1))


def init_sae(
    X, width: int, b_dec, key, architecture: str = "standard", *, k=None, lam=None, widths=None
) -> AbstractSAE:
    """An untrained SAE of ``architecture``: decoder rows at data directions from ``b_dec``."""
    arch = _ALIASES.get(architecture, architecture)
    D = _decoder_at_data(X, b_dec, key, width)
    zeros = to_device(np.zeros(width, X.dtype), X.dtype)
    if arch == "standard":
        return ReluSAE(D, zeros, D, b_dec)
    if arch in ("topk", "abstopk"):
        return ARCHITECTURES[arch][0](D, zeros, D, b_dec, k=int(k))
    if arch == "batchtopk":
        return BatchTopKSAE(D, zeros, D, b_dec, zeros, k=float(k))
    if arch == "matryoshka_batchtopk":
        w = default_widths(width) if widths is None else tuple(int(v) for v in widths)
        return MatryoshkaSAE(D, zeros, D, b_dec, zeros, widths=w, k=float(k))
    if arch == "jumprelu":
        theta = math.sqrt(2 * float(lam))
        return JumpReLUSAE(D, zeros, D, b_dec, zeros + theta, bandwidth=0.5 * theta)
    if arch == "gated":
        return GatedSAE(D, zeros, zeros, zeros, D, b_dec)
    raise ValueError(f"unknown architecture {architecture!r}; one of {sorted(ARCHITECTURES)}")


@full_precision
def train_sae(
    X: Float[ArrayLike, "n_samples n_features"],
    width: int | AbstractSAE,
    lam: float | None = None,
    *,
    key: PRNGKeyArray,
    architecture: str = "standard",
    k: float | None = None,
    widths=None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    steps: int = 2000,
    batch_size: int = 256,
    b_dec_init: str | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 500,
    progress: bool | None = None,
    throw: bool = False,
    pool_rows: int | None = None,
    devices=None,
    distributed: bool = False,
) -> SAETraining:
    """Train an SAE of ``architecture`` (standard, topk, abstopk, batchtopk, matryoshka_batchtopk,
    jumprelu, gated) with minibatch ``optimizer`` (default ``optax.adam(learning_rate)``) on its
    own loss.

    ``lam`` is the L1 weight (standard, gated) or the L0 weight (jumprelu); ``k`` the codes per row
    (topk, abstopk) or per row on average over a batch (batchtopk, matryoshka); ``widths`` the
    Matryoshka prefixes. ``width`` may instead be an SAE to continue training.

    Steps run in chunks of ``checkpoint_every`` (step t's minibatch comes from
    ``fold_in(key, t)``), so a run resumed from ``checkpoint_dir`` after an interruption equals an
    uninterrupted one bit for bit and loses at most one chunk; a finished run is returned as
    stored. ``throw=True`` raises ``RuntimeError`` when training stops on a non-finite value.

    Out of core: X may be an ``ActivationStore`` or anything it reads (a memmap is an array here:
    wrap it in a store to stream it). Chunk c of steps then draws
    its minibatches from the c-th window of ``pool_rows`` consecutive rows (default
    max(65536, 16·batch_size)), cycling through the store, so memory is one window and a resumed
    run reads on from the window it stopped in. ``devices`` (``"all"`` or a list) splits every
    minibatch's rows over devices (parameters replicated; ``batch_size`` must divide evenly).

    ``distributed=True`` trains one SAE over the rows of every process of a ``jax.distributed``
    run: each process passes its own rows as a store (``ActivationStore(...).part()``); window c
    of the run is the c-th windows of all processes together, as one global array over every
    device (``jax.make_array_from_process_local_data``), the parameters start from process 0's and
    are replicated, and XLA's collectives do the rest: the run equals one process that holds all
    the windows. It checkpoints into a ``checkpoint_dir`` that every process sees (a shared
    filesystem): process 0 writes it, every process resumes from it, and a resume with other rows
    or options on any process is refused.
    """
    store = as_store(X) if is_store_like(X) else None
    if distributed:
        if store is None:
            raise ValueError(
                "distributed=True reads each process's own rows from a store: pass "
                "ActivationStore(...).part()"
            )
        devices = "all"
    if store is not None:
        rows = check_positive_int(pool_rows, "pool_rows") if pool_rows is not None else None
        rows = rows or max(65536, 16 * check_positive_int(batch_size, "batch_size"))
        if store.n_rows is not None:  # every process's windows have one shape
            rows = min(rows, store.n_rows)
            rows = int(-max_over_processes(np.asarray([-rows]))[0]) if distributed else rows
        pools = store.pools(rows)
        X = check_matrix(next(pools), "X")
    else:
        X = check_matrix(X, "X")
    steps = check_positive_int(steps, "steps")
    batch_size = min(check_positive_int(batch_size, "batch_size"), X.shape[0])
    chunk = min(check_positive_int(checkpoint_every, "checkpoint_every"), steps)
    lr = check_lam(learning_rate, X.dtype, "learning_rate")
    mesh = None
    if devices is not None:
        mesh = row_mesh(devices)
        if batch_size % mesh.devices.size:
            raise ValueError(
                f"`batch_size` = {batch_size} does not split over {mesh.devices.size} devices"
            )
    if checkpoint_dir is not None and optimizer is not None:
        raise ValueError(
            "a custom `optimizer` cannot be fingerprinted for a checkpoint (its hyperparameters "
            "live in closures); checkpoint with the default Adam and `learning_rate`, or pass "
            "checkpoint_dir=None"
        )
    t0 = time.perf_counter()
    given = isinstance(width, AbstractSAE)
    if given:
        sae = width
        arch = sae.architecture
    else:
        width = check_positive_int(width, "width")
        arch = _ALIASES.get(architecture, architecture)
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {architecture!r}; one of {sorted(ARCHITECTURES)}"
            )
        _, needs_lam, needs_k = ARCHITECTURES[arch]
        if needs_lam and lam is None:
            raise ValueError(f"architecture {arch!r} needs `lam` (its sparsity weight)")
        if needs_k:
            if k is None or not 0 < k <= width:
                raise ValueError(
                    f"architecture {arch!r} needs `k` in (0, width = {width}], got {k}"
                )
        b_dec_init = b_dec_init or ("wide" if lam is not None else "median")
        if b_dec_init not in ("wide", "median"):
            raise ValueError(f"`b_dec_init` must be 'wide' or 'median', got {b_dec_init!r}")
        if b_dec_init == "wide" and lam is None:
            raise ValueError("`b_dec_init='wide'` needs `lam`")
    lam_v = jnp.asarray(0.0 if lam is None else check_lam(lam, X.dtype), X.dtype)
    fp = checkpoint.fingerprint(
        X, key=key, lam=float(lam_v), architecture=arch, k=None if k is None else float(k),
        widths=None if widths is None else [int(v) for v in widths], learning_rate=float(lr),
        batch_size=batch_size, b_dec_init=b_dec_init, checkpoint_every=chunk,
        source=None if store is None else [store.fingerprint(), X.shape[0]],
        width=width if not given else [checkpoint.digest(v) for v in jax.tree_util.tree_leaves(eqx.filter(sae, eqx.is_inexact_array))],
    ) if checkpoint_dir is not None else None  # fmt: skip
    # process 0 of a distributed run writes the checkpoint that all processes read
    fp, writer = checkpoint.of_job(fp, distributed)
    lock = checkpoint_dir if writer else None
    with dir_lock(lock):  # after validation: a bad call creates nothing
        if not given:
            scale = float(_median_distance(X))
            scale = float(from_first_process(scale)) if distributed else scale
            lam_b = lam_v if b_dec_init == "wide" else max(scale, 1e-30) * 1e-6
            b0 = solve_wide(
                X if store is None else store, lam_b, rtol=1e-5, max_steps=5000, throw=False,
                distributed=distributed,
            ).bias  # fmt: skip
            k_init, key = jax.random.split(key)
            sae = init_sae(X, width, b0, k_init, arch, k=k, lam=lam, widths=widths)
        opt = default_optimizer(float(lr)) if optimizer is None else optimizer
        params, static = eqx.partition(sae, eqx.is_inexact_array)
        if distributed:  # process 0's parameters ...
            params = jax.tree.map(lambda a: jnp.asarray(from_first_process(a)), params)
        state = _TrainState(params, opt.init(params), jnp.asarray(0, jnp.int32))
        if distributed:  # ... and the whole state on every device of every process
            state, lam_v, key = replicate_tree(mesh, (state, lam_v, key))
        losses = np.full(steps, np.nan, np.asarray(X[:1]).dtype)
        resumed_from = 0
        if checkpoint_dir is not None:
            cap = checkpoint.saved_capacity(checkpoint_dir) or steps
            like = (state, jnp.zeros(cap, losses.dtype))
            loaded, _ = checkpoint.load(checkpoint_dir, like, fp)
            if loaded is not None:
                state, stored = loaded
                if distributed:
                    state = replicate_tree(mesh, state)
                if int(state.step) > steps:
                    raise ValueError(
                        f"{checkpoint_dir!r} holds a run of {int(state.step)} steps, more than "
                        f"steps={steps}; raise `steps` or use another directory"
                    )
                resumed_from = int(state.step)
                losses[:resumed_from] = np.asarray(stored)[:resumed_from]
        bar = Progress(steps, "train_sae", progress)
        result = RESULTS.successful
        done = resumed_from
        if store is not None:  # chunk c trains on window c
            pools = store.pools(X.shape[0], skip=done // chunk)
        while done < steps:
            n = min(chunk, steps - done)
            Xc = X if store is None else check_matrix(next(pools), "X")
            if distributed:  # this process's window is its rows of the global window
                Xc = jax.make_array_from_process_local_data(row_sharding(mesh, 2), np.asarray(Xc))
            new, chunk_losses = _run_chunk(state, Xc, lam_v, key, n, static, opt, batch_size, mesh)
            chunk_losses = np.asarray(chunk_losses)
            losses[done : done + n] = chunk_losses
            if not (np.isfinite(chunk_losses).all() and _finite(new.params)):
                result = RESULTS.nonfinite
                losses[done : done + n][~np.isfinite(chunk_losses)] = np.nan
                break
            state, done = new, done + n
            if checkpoint_dir is not None and writer:
                checkpoint.save(
                    checkpoint_dir, (state, jnp.asarray(losses)), {"fingerprint": fp}, steps
                )
            bar.update(done, loss=float(chunk_losses[-1]))
        bar.close()
    if throw and result != RESULTS.successful:
        raise RuntimeError(f"train_sae stopped at step {done}: {RESULTS[result]}")
    sae = eqx.combine(state.params, static)
    return SAETraining(sae, jnp.asarray(losses), time.perf_counter() - t0, result, resumed_from)


class _TrainState(NamedTuple):
    params: AbstractSAE
    opt_state: optax.OptState
    step: Array


def _finite(tree) -> bool:
    return all(all_finite(x) for x in jax.tree_util.tree_leaves(tree))


@functools.lru_cache(maxsize=32)
def default_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """``optax.adam(learning_rate)``, one object per rate, so that the compiled training chunk
    (which takes the optimizer as a static argument) is reused by later calls."""
    return optax.adam(learning_rate)


@eqx.filter_jit
def _run_chunk(state, X, lam, key, n, static, opt, batch_size, mesh=None):
    """n optimiser steps from ``state.step``; step t's minibatch is drawn with ``fold_in(key, t)``
    (and its rows split over ``mesh``'s devices when given). Compiled once per (shapes, chunk
    length, architecture, optimizer, batch size, mesh)."""

    def step(carry, t):
        params, opt_state = carry
        idx = jax.random.choice(
            jax.random.fold_in(key, t), X.shape[0], (batch_size,), replace=False
        )
        batch = X[idx]
        if mesh is not None:
            batch = jax.lax.with_sharding_constraint(batch, row_sharding(mesh, batch.ndim))

        def loss(p):
            return eqx.combine(p, static).loss(batch, lam)

        (value, aux), g = jax.value_and_grad(loss, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        model = eqx.combine(optax.apply_updates(params, upd), static).after_step(aux)
        return (eqx.filter(model, eqx.is_inexact_array), opt_state), value

    ts = state.step + jnp.arange(n, dtype=jnp.int32)
    (params, opt_state), losses = jax.lax.scan(step, (state.params, state.opt_state), ts)
    return _TrainState(params, opt_state, state.step + n), losses
