"""One epoch of finite-width dictionary learning (SPEC §3) and the state it carries.

Full batch: alternate monotone all-atom updates (``_atoms``), the exact bias and exact codes
(``_codes``), with an inertial step: the codes are solved for atoms extrapolated along the last
epoch's move, D_e = normalise(D' + μ(D' − D'_prev)), and kept only if that beats the plain update
(D', old codes); L(D, Z, b) never increases and the codes held are exact for the atoms held
(after a rejected extrapolation the next epoch, or the end of the fit, solves them again).
``_epoch`` is one compiled program (vmapped over seeds by ``fit_dictionary_seeds``);
``_staged_epoch`` runs the same epoch as separate programs and compiles only what a fit runs.
Minibatch (``batch_size``): online updates in the style of Mairal et al. (2010) with sufficient
statistics A = Σ Zᵀ Z, B = Σ Zᵀ(X − b) decayed by β = 1 − batch_size/N, one ``lax.scan`` over the
minibatches of each epoch.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._core.devices import per_device, row_sharding
from .._core.objective import loss_value as _loss
from .._core.objective import relative_gap
from .._core.validate import to_device
from .atoms import atom_update, bias_update, code_gram, normalise_rows, sparse_gram_support
from .codes import (
    bucket_size,
    dense_fallback,
    first_tiers,
    gram_codes,
    initial_tiers,
    tier_pair,
    working_set_size,
)


class History(eqx.Module):
    """Per-epoch records (arrays of length ``max_epochs``; entries past ``n_epochs`` are NaN/−1)."""

    loss: Float[Array, " epochs"]
    gap: Float[Array, " epochs"]
    l0: Float[Array, " epochs"]
    dead: Int[Array, " epochs"]
    resampled: Int[Array, " epochs"]

    def trimmed(self, n: int) -> dict:
        return {
            k: np.asarray(getattr(self, k))[:n] for k in ("loss", "gap", "l0", "dead", "resampled")
        }

    def resized(self, n: int) -> History:
        """The records cut or padded (NaN / −1) to length n: a resumed run's ``max_epochs``."""

        def fit(a):
            a = np.asarray(a)
            if a.shape[0] >= n:
                return to_device(a[:n], a.dtype)
            fill = np.nan if np.issubdtype(a.dtype, np.floating) else -1
            return to_device(np.concatenate([a, np.full(n - a.shape[0], fill, a.dtype)]), a.dtype)

        return jax.tree.map(fit, self)


class _State(eqx.Module):
    D: Array
    D_prev: Array  # the last epoch's plain atom update, for the inertial step
    extrapolate: Array  # whether the next epoch extrapolates (not after a rejection)
    b: Array
    Z: Array
    A: Array
    B: Array
    rsum: Array
    count: Array
    epoch: Array
    history: History


def _real(D):
    """The fitted atoms: unit rows, not a width bucket's zero rows (``buckets``)."""
    return jnp.sum(D * D, axis=1) > 0


def _resample_dead(D, Z, X, b, key, w, enabled=True):
    """Replace atoms no point uses with residual directions of the worst-reconstructed points of
    positive weight (not a bucket's padded rows, ``row_buckets``); returns (atoms, mask of the
    replaced ones). With no dead atom (the usual case), or when not ``enabled``, it skips the
    residuals and their sort (``lax.cond``). A bucket's zero atoms are not dead atoms: they stay
    zero."""
    dead = (jnp.sum(Z, axis=0) <= 0) & _real(D)
    return jax.lax.cond(
        jnp.any(dead) & enabled,
        lambda: _replace_dead(D, Z, X, b, key, dead, w > 0),
        lambda: (D, jnp.zeros_like(dead)),
    )


def _replace_dead(D, Z, X, b, key, dead, counted):
    R = X - b - Z @ D
    rn = jnp.where(counted, jnp.linalg.norm(R, axis=1), -1)
    k = D.shape[0]
    top = jnp.argsort(-(rn + 1e-6 * jax.random.uniform(key, rn.shape)))[: min(k, X.shape[0])]
    last = jnp.minimum(top.shape[0], jnp.sum(counted)) - 1
    rank = jnp.clip(jnp.cumsum(dead) - 1, 0, last)
    cand = normalise_rows(R[top[rank]])
    ok = dead & (jnp.linalg.norm(cand, axis=1) > 0)
    return jnp.where(ok[:, None], cand, D), ok


class _Config(eqx.Module):
    lam: Array
    fit_bias: bool = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    atom_steps: int = eqx.field(static=True)
    code_tol: float = eqx.field(static=True)
    code_steps: int = eqx.field(static=True)
    resample: bool = eqx.field(static=True)
    momentum: float = eqx.field(static=True, default=0.0)
    epoch_tol: Array | None = None  # the epoch's code tolerance (traced), default code_tol
    ws: tuple[int, ...] | None = eqx.field(static=True, default=None)
    support: int | None = eqx.field(static=True, default=None)

    @property
    def tol(self):
        """The code tolerance of this epoch: ``epoch_tol``, else ``code_tol``."""
        return self.code_tol if self.epoch_tol is None else self.epoch_tol


def _update(cfg: _Config, s: _State, X, w, fresh):
    """Atoms and bias for the current codes, and the atoms to encode next (extrapolated along the
    last move, except for the ``fresh`` resampled ones); returns (D', Z scaled, b, D_e). With no
    codes (the first epoch) this is (D, Z, b, D) and ``_staged_epoch`` skips it."""
    coded = jnp.any(s.Z > 0)
    A = code_gram(s.Z, w, cfg.support)
    B = (w[:, None] * s.Z).T @ (X - s.b)
    D, scale = atom_update(s.D, A, B, cfg.atom_steps)
    Z = s.Z * scale
    b = jnp.where(coded, bias_update(X, Z, D, w), s.b) if cfg.fit_bias else s.b
    if cfg.momentum:  # extrapolated atoms, unless the move nearly cancels an atom
        Dm = D + jnp.where(s.extrapolate & ~fresh[:, None], cfg.momentum * (D - s.D_prev), 0)
        De = jnp.where(jnp.linalg.norm(Dm, axis=1, keepdims=True) >= 0.5, normalise_rows(Dm), D)
    else:
        De = D
    return D, Z, b, De


def _epoch_codes(cfg: _Config, De, b, X, Z, lazy: bool = False):
    """Exact codes for D_e warm-started at Z, to the epoch's tolerance. ``lazy``: without the
    dense solve of rows that outgrow the working sets; returns (codes, whether it is needed)."""
    return gram_codes(De, b, X, cfg.lam, Z, cfg.tol, cfg.code_steps, cfg.ws, dense=not lazy)


def _accept(cfg: _Config, s: _State, X, w, D, Z, b, De, Ze, fresh, wide_bound, plain=True):
    """The next state: (D_e, Z_e) when L(D_e, Z_e, b) ≤ L(D', Z, b), else the plain update, so
    that L never increases; the epoch recorded in the history. Returns (state, L, the support
    size of each row, for the next working-set sizes without copying Z to the host). ``plain``
    (a bool, traced or not) false takes (D_e, Z_e) without evaluating the plain update: the
    polish's trial point, which runs the epochs' compiled program."""
    coded = jnp.any(s.Z > 0)
    loss_e = _loss(X, De, Ze, b, cfg.lam, w)
    loss_plain = jax.lax.cond(
        plain, lambda: _loss(X, D, Z, b, cfg.lam, w), lambda: jnp.full_like(loss_e, jnp.inf)
    )
    keep = loss_e <= loss_plain
    new = (jnp.where(keep, De, D), D, keep & coded, b, jnp.where(keep, Ze, Z))
    s = eqx.tree_at(lambda t: (t.D, t.D_prev, t.extrapolate, t.b, t.Z), s, new)
    loss = jnp.minimum(loss_e, loss_plain)
    return _record(s, loss, jnp.sum(fresh), wide_bound, w), loss, jnp.sum(s.Z > 0, axis=1)


def _full_epoch(cfg: _Config, s: _State, X, w, key, wide_bound):
    """One full-batch epoch as one program (``fit_dictionary_seeds`` vmaps it): resample dead
    atoms, ``_update``, ``_epoch_codes``, ``_accept``."""
    fresh = jnp.zeros(s.D.shape[0], bool)
    if cfg.resample:
        D, fresh = _resample_dead(s.D, s.Z, X, s.b, key, w, enabled=jnp.any(s.Z > 0))
        s = eqx.tree_at(lambda t: t.D, s, D)
    D, Z, b, De = _update(cfg, s, X, w, fresh)
    Ze = _epoch_codes(cfg, De, b, X, Z)
    return _accept(cfg, s, X, w, D, Z, b, De, Ze, fresh, wide_bound)[0]


_update_jit = eqx.filter_jit(_update)


@eqx.filter_jit
def _codes_accept(cfg: _Config, s: _State, X, w, D, Z, b, De, fresh, wide_bound, plain):
    """``_epoch_codes`` without the dense solve, then ``_accept``, in one program (XLA runs
    L(D', Z, b) beside the code solve's loops). Returns ``_accept``'s (state, loss, supports), the
    codes and whether some rows outgrew the working sets and need ``_dense_accept`` instead."""
    Ze, dense = _epoch_codes(cfg, De, b, X, Z, lazy=True)
    return *_accept(cfg, s, X, w, D, Z, b, De, Ze, fresh, wide_bound, plain), Ze, dense


@eqx.filter_jit
def _dense_accept(cfg: _Config, s: _State, X, w, D, Z, b, De, Ze, fresh, wide_bound, plain):
    """``_codes_accept`` for the epochs where some rows outgrew the working sets: those rows of
    ``Ze`` solved densely (``dense_fallback``), then ``_accept``."""
    Ze = dense_fallback(De, b, X, cfg.lam, Ze, cfg.tol, cfg.code_steps)
    return _accept(cfg, s, X, w, D, Z, b, De, Ze, fresh, wide_bound, plain)


def _encode_and_accept(
    cfg: _Config, s: _State, X, w, D, Z, b, De, fresh, wide_bound, plain: bool = True
):
    """``_accept`` with exact codes for D_e: ``_codes_accept``, and ``_dense_accept`` (compiled
    only by a fit that needs it) where rows outgrew the working sets. The code Gram's support is
    left out of the static configuration (the codes do not use it): a change of it recompiles
    the update only. ``plain`` is passed as an array, so that the epochs, ``finish_fit`` and the
    polish's trial points (``plain=False``) run one compiled program."""
    cfg = dataclasses.replace(cfg, support=None)
    plain = to_device(np.asarray(plain), np.bool_)
    args = (cfg, s, X, w, D, Z, b, De)
    *accepted, Ze, dense = _codes_accept(*args, fresh, wide_bound, plain)
    if bool(dense):
        return _dense_accept(*args, Ze, fresh, wide_bound, plain)
    return tuple(accepted)


@eqx.filter_jit
def _resample_state(s: _State, X, w, fit_key):
    """``_resample_dead`` on a state, with the epoch's key: (state, mask of replaced atoms)."""
    D, fresh = _resample_dead(s.D, s.Z, X, s.b, _epoch_key(fit_key, s.epoch), w)
    return eqx.tree_at(lambda t: t.D, s, D), fresh


def _staged_epoch(cfg: _Config, s: _State, X, w, fit_key, wide_bound, *, coded: bool, dead: bool):
    """``_full_epoch`` as separate programs, so that one fit compiles only what it runs: the
    resampling only when the last epoch left a dead atom (``dead``), and no update before the
    first codes (``coded`` false: Z = 0 makes it the identity), and the dense solve of rows that
    outgrow the working sets only when some do (each ~0.1–0.4 s to compile at K = 1024). The
    codes-and-accept program is the one ``finish_fit`` runs too. Returns (state, support size of
    each row)."""
    fresh = to_device(np.zeros(s.D.shape[0], np.bool_), np.bool_)
    if cfg.resample and coded and dead:
        s, fresh = _resample_state(s, X, w, fit_key)
    if (
        coded
    ):  # the update does not use the working sets: a change of them recompiles the codes only
        D, Z, b, De = _update_jit(dataclasses.replace(cfg, ws=None), s, X, w, fresh)
    else:
        D, Z, b, De = s.D, s.Z, s.b, s.D
    new, _, supports = _encode_and_accept(cfg, s, X, w, D, Z, b, De, fresh, wide_bound)
    return new, supports


def _batch_codes(cfg: _Config, D, b, Xb, Z0, mesh=None):
    """Codes of a minibatch for (D, b) warm-started at Z0. With ``mesh`` (1-D, named ``rows``) the
    rows are split over its devices and each device solves its own under ``jax.shard_map`` (rows
    are independent problems; a solve XLA partitions itself exchanges rows at every working-set
    step)."""

    def solve(D, b, X, lam, Z0):
        return gram_codes(D, b, X, lam, Z0, cfg.code_tol, cfg.code_steps, cfg.ws)

    if mesh is None:
        return solve(D, b, Xb, cfg.lam, Z0)
    from jax.sharding import PartitionSpec as P

    Xb, Z0 = (jax.lax.with_sharding_constraint(a, row_sharding(mesh, 2)) for a in (Xb, Z0))
    rows = P("rows")
    return per_device(solve, mesh, (P(), P(), rows, P(), rows), rows)(D, b, Xb, cfg.lam, Z0)


def minibatch_step(cfg: _Config, beta, stats, Xb, wb, Z0, mesh=None):
    """One online update (Mairal et al. 2010) on the minibatch (Xb, wb), codes warm-started at Z0:
    codes for (D, b) (``_batch_codes``, over ``mesh``'s devices when given); A ← βA + Zᵀ W Z,
    B ← βB + Zᵀ W (X − b); b from the decayed residual sums; atoms by ``atom_update``.
    ``stats`` = (D, b, A, B, rsum, count); returns (stats, codes Zb, the atoms' rescaling)."""
    D, b, A, B, rsum, count = stats
    Zb = _batch_codes(cfg, D, b, Xb, Z0, mesh)
    WZ = wb[:, None] * Zb
    A = beta * A + code_gram(Zb, wb, cfg.support)
    B = beta * B + WZ.T @ (Xb - b)
    if cfg.fit_bias:
        rsum = beta * rsum + wb @ (Xb - Zb @ D)
        count = beta * count + jnp.sum(wb)
        b = rsum / count
    D, scale = atom_update(D, A, B, cfg.atom_steps)
    A, B = A * scale[:, None] * scale, B * scale[:, None]
    return (D, b, A, B, rsum, count), Zb, scale


def _minibatch_epoch(cfg: _Config, s: _State, X, w, key):
    n = X.shape[0]
    bs = cfg.batch_size
    nb = n // bs
    perm = jax.random.permutation(key, n)[: nb * bs].reshape(nb, bs)
    beta = 1 - bs / n

    def step(carry, idx):
        D, b, Z, A, B, rsum, count = carry
        stats, Zb, scale = minibatch_step(
            cfg, beta, (D, b, A, B, rsum, count), X[idx], w[idx], Z[idx]
        )
        D, b, A, B, rsum, count = stats
        return (D, b, Z.at[idx].set(Zb) * scale, A, B, rsum, count), None

    carry = (s.D, s.b, s.Z, s.A, s.B, s.rsum, s.count)
    (D, b, Z, A, B, rsum, count), _ = jax.lax.scan(step, carry, perm)
    n_res = 0
    if cfg.resample:
        D, fresh = _resample_dead(D, Z, X, b, key, w)
        n_res = jnp.sum(fresh)
    s = eqx.tree_at(
        lambda t: (t.D, t.b, t.Z, t.A, t.B, t.rsum, t.count), s, (D, b, Z, A, B, rsum, count)
    )
    return s, n_res


def _epoch_key(key, epoch):
    """The key of epoch e of a fit with ``key``, fold_in(split(key)[1], e), derived inside the
    compiled epoch (an eager key operation compiles a program of its own, ~0.05 s)."""
    return jax.random.fold_in(jax.random.split(key)[1], epoch)


def _record(s: _State, loss, n_res, wide_bound, w) -> _State:
    """The epoch's loss, gap, L0 (the w-weighted mean support: a bucket's padded rows, of weight
    0, do not count), dead and resampled atoms written to the history; epoch + 1."""
    e = s.epoch
    h = s.history

    def put(a, value):  # a dynamic-update-slice: cheaper to compile than a scatter (``.at[e]``)
        return jax.lax.dynamic_update_index_in_dim(a, jnp.asarray(value, a.dtype), e, 0)

    h = History(
        put(h.loss, loss),
        put(h.gap, relative_gap(loss - wide_bound, wide_bound)),
        put(h.l0, jnp.sum(w * jnp.sum(s.Z > 0, axis=1)) / jnp.sum(w)),
        put(h.dead, jnp.sum((jnp.sum(s.Z, axis=0) <= 0) & _real(s.D))),
        put(h.resampled, n_res),
    )
    return eqx.tree_at(lambda t: (t.epoch, t.history), s, (e + 1, h))


@eqx.filter_jit
def _epoch(cfg: _Config, s: _State, X, w, fit_key, wide_bound):
    """One epoch as one compiled program (full batch or minibatch)."""
    key = _epoch_key(fit_key, s.epoch)
    if cfg.batch_size is None:
        return _full_epoch(cfg, s, X, w, key, wide_bound)
    s, n_res = _minibatch_epoch(cfg, s, X, w, key)
    return _record(s, _loss(X, s.D, s.Z, s.b, cfg.lam, w), n_res, wide_bound, w)


_LOOSE_CODE_TOL = 1e-2


def epoch_code_tol(code_tol: float, losses, e: int) -> float:
    """KKT tolerance of full-batch epoch e's codes: the last relative decrease of L, clipped to
    [code_tol, 1e-2]. Codes a dictionary is still moving away from need not be exact (on the
    K = 1024 benchmark the loss path is the same to 4 digits, and an epoch 15 % cheaper); near
    convergence they are solved to code_tol, and ``finish_fit`` re-solves them if the fit stops
    earlier. A cap of 1e-1 made the K = 1024 benchmark 15 % faster still, but warm-started codes
    that already meet it are left as they are, and the bias of a 1-D fit stalled 2e-4 from its
    optimum (5e-6 with 1e-2)."""
    if e < 2:
        return max(code_tol, _LOOSE_CODE_TOL)
    prev, last = float(losses[e - 2]), float(losses[e - 1])
    rel = (prev - last) / max(abs(last), np.finfo(np.float64).tiny)
    return float(np.clip(rel, code_tol, max(code_tol, _LOOSE_CODE_TOL)))


def _keep(old: int | None, new: int) -> int:
    """A size is kept while it lies between the new need and twice it (few distinct sizes)."""
    return old if old is not None and new <= old <= 2 * new else new


def _first_tier(old: int, need: int, supports) -> int:
    """The first working-set tier of the next epoch: grown to the ``need`` only once half of the
    rows fill it (their support reaches it, so each is solved again in the next tier), else kept
    until it is more than twice the need. Measured on fits of N = 4000 rows of sparse-coded data
    and real activations at λ = 0.05 × the median distance (25 epochs, first tier forced), kept
    against grown at epoch 1 when a share p of the rows filled it: p = 0.1 (96 atoms, K = 2048)
    18.7 s against 23.2 s; p = 0.27 (48, K = 512) 11.6 against 12.2; p = 0.31 (64, K = 512) 10.6
    against 11.2; p = 0.67 (48, K = 512) 18.0 against 11.3–11.8."""
    if need > old:
        return need if np.quantile(supports, 0.5) >= old else old
    return _keep(old, need)


def _with_working_set(cfg: _Config, supports, k: int, epoch: int, guess=None) -> _Config:
    """Per-point working-set tiers (``_codes.working_set_lasso``) once K = k > 64, sized from the
    current support sizes of the rows (``row_supports``), and the support ``code_gram``
    accumulates sparsely where that pays (``sparse_gram_support`` of the 99.9 % quantile of the
    supports). Before any codes: ``first_tiers`` of ``guess()`` (the guessed supports of a sample
    of rows) when given, else (16, 256) (a fit starts from atoms at data points, whose first codes
    are sparse on real activations). After that the first tier changes only when it is more than
    twice the need or half of the rows fill it (``_first_tier``), and the last never shrinks, so a
    fit compiles its epoch for few sizes (of 18 fits on real and sparse-coded data, λ = 0.05–0.25 ×
    the median distance, K = 128–2048, none compiles it twice)."""
    if k <= 64:
        return cfg
    supports = np.asarray(supports)
    if epoch == 0 and not supports.any():
        ws = initial_tiers(k, first=16) if guess is None else first_tiers(k, guess())
        support = sparse_gram_support(64, k)
    else:
        ws = working_set_size(supports, k)
        need = sparse_gram_support(min(k, bucket_size(int(np.quantile(supports, 0.999)))), k)
        if cfg.ws is not None:
            ws = tier_pair(_first_tier(cfg.ws[0], ws[0], supports), max(cfg.ws[-1], ws[-1]))
        support = None if need is None else _keep(cfg.support, need)
    if ws == cfg.ws and support == cfg.support:
        return cfg
    return dataclasses.replace(cfg, ws=ws, support=support)


def initial_state(D0, b0, n: int, epochs: int) -> _State:
    """The state before the first epoch: no codes, empty statistics and history (built on the
    host, so that no small programs are compiled). D0 may carry leading seed axes (S, K, d)."""
    *lead, k, d = D0.shape
    dt = np.dtype(D0.dtype)

    def full(shape, value=0, dtype=dt):
        return to_device(np.full((*lead, *shape), value, dtype), dtype)

    nanv, negi = full((epochs,), np.nan), full((epochs,), -1, np.int32)
    return _State(
        D0,
        D0,
        full((), False, np.bool_),
        jnp.broadcast_to(b0, (*lead, d)) if lead else b0,
        full((n, k)),
        full((k, k)),
        full((k, d)),
        full((d,)),
        full(()),
        full((), 0, np.int32),
        History(nanv, nanv, nanv, negi, negi),
    )
