"""``DictionarySolver``: the options of a finite-width fit and its init / step / terminate.

One step is one epoch of SPEC §1: exact codes for the current atoms and bias, then vmapped atom
updates (and the bias, with ``fit_bias``), full batch with an inertial extrapolation or over
minibatches of ``batch_size`` rows. Alternating epochs run until the relative loss decrease
(L_{e−1} − L_e)/|L_e| ≤ ``loss_tol``. With the stop rule ``"conditions"`` (the default of
full-batch fits) the fit then polishes (``polish``: L-BFGS on the atoms and bias at exact codes,
one code solve per step) until the first-order conditions hold to ``tol``: code KKT, atom
stationarity and the bias residual, in units of λ (SPEC §4; ``RESULTS.successful``). With
``"loss"`` (minibatch fits, several seeds at once) the loss rule stops the fit. A fit also stops
when L is non-finite (``RESULTS.nonfinite``), when the polish can lower L no further
(``RESULTS.stalled``) or after ``max_epochs`` epochs and polish steps (``max_steps_reached``).

As in optimistix, the solver is an ``eqx.Module`` holding only configuration; what changes
between epochs lives in a ``FitState``. Epochs run on the device; the loop between them runs on
the host, because each epoch picks the working-set sizes its code solve compiles for from the
last epoch's code supports. ``fit_dictionary`` (progress, callbacks, checkpoints),
``fit_dictionary_seeds`` (one vmapped epoch for several seeds) and ``width_sweep`` drive it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._core.results import RESULTS
from .._core.validate import check_number, check_positive_int, to_device
from .codes import row_supports
from .epochs import (
    _Config,
    _epoch,
    _staged_epoch,
    _State,
    _with_working_set,
    epoch_code_tol,
)
from .polish import ARMIJO, Memory, direction, remember, trial
from .support_guess import guess_supports, supports_guess


def _line_search(cfg: _Config, s: _State, mem, pt, X, w, wide_bound):
    """The polish's step along the L-BFGS direction of ``mem`` at ``pt``: halved from 1 until
    ΔL ≤ 1e-4·step·⟨g, p⟩, at most 30 times; (state, point, supports), or None when no step
    (or no descent direction) lowers L."""
    pD, pb, slope = direction(mem, pt, s.D)
    slope, step = float(slope), 1.0
    if not slope < 0:
        return None
    for _ in range(30):
        new, pt_new, delta, sup = trial(cfg, s, pD, pb, to_device(step, X.dtype), X, w, wide_bound)
        if float(delta) <= ARMIJO * step * slope:
            return new, pt_new, sup
        step /= 2
    return None


# one compiled program per configuration: the epoch of every seed at once
_epoch_seeds = eqx.filter_jit(eqx.filter_vmap(_epoch, in_axes=(None, 0, None, None, 0, None)))


@dataclasses.dataclass(frozen=True)
class FitState:
    """Where a fit stands between epochs (host side). ``state`` is the device state (atoms, bias,
    codes, statistics, history; a leading seed axis for several seeds), ``cfg`` the compiled
    epoch's configuration, ``epoch`` the epochs run, ``prev`` the last loss (per seed),
    ``active`` which seeds still run (None for one fit) and ``result`` the status once stopped."""

    state: _State
    cfg: _Config
    wide_bound: Array
    epoch: int
    prev: float | np.ndarray
    supports: object
    active: np.ndarray | None = None
    result: RESULTS | None = None
    polish: tuple | None = (
        None  # (Memory, Point) while polishing; () once the loss rule handed over
    )


class DictionarySolver(eqx.Module):
    """Learns D (unit rows), b and Z ≥ 0 minimising
    L = (1/2N)Σ w||x − b − Dz||² + (λ/N)Σ w||z||₁ (SPEC §1), one epoch per ``step``.

    Attributes:
        fit_bias: learn b (else b = 0).
        batch_size: rows per minibatch (None: full batch).
        max_epochs: at most this many epochs and polish steps together.
        tol: the ``"conditions"`` stop: code KKT, atom stationarity and bias residual ≤ tol
            (units of λ; ``check_optimality``'s default tolerance). At least ``code_tol`` (the
            codes' KKT residual is only certified to code_tol), or 0 to run to ``max_epochs``.
        loss_tol: the loss rule (L_{e−1} − L_e)/|L_e| ≤ loss_tol, which ends the alternating
            epochs: it stops a ``"loss"`` fit and hands a ``"conditions"`` fit to the polish.
        stop: ``"conditions"`` or ``"loss"``; None (default): ``"conditions"`` for full-batch
            fits, ``"loss"`` with ``batch_size`` (the polish needs every row's exact codes).
        atom_steps: projected-gradient steps per atom and epoch.
        code_tol: KKT tolerance of the returned codes (full-batch epochs solve theirs to the last
            relative decrease of L, clipped to [code_tol, 1e-2]).
        code_steps: at most this many coordinate sweeps per code solve.
        resample_dead: restart atoms that no code uses at the worst-fitted points.
        momentum: inertial factor μ of full-batch epochs: codes are solved for
            normalise(D' + μ(D' − D'_prev)) and kept only when that lowers L (0: off).
    """

    fit_bias: bool = True
    batch_size: int | None = None
    max_epochs: int = 500
    tol: float = 1e-3
    loss_tol: float = 1e-6
    stop: str | None = None
    atom_steps: int = 10
    code_tol: float = 1e-4
    code_steps: int = 500
    resample_dead: bool = True
    momentum: float = 0.8

    def __check_init__(self):
        for name in ("fit_bias", "resample_dead"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        for name in ("max_epochs", "atom_steps", "code_steps"):
            check_positive_int(getattr(self, name), name)
        check_number(self.tol, "tol", positive=False)
        check_number(self.loss_tol, "loss_tol", positive=False)
        if self.stop not in (None, "conditions", "loss"):
            raise ValueError(f"`stop` must be 'conditions', 'loss' or None, got {self.stop!r}")
        if self.stop == "conditions" and self.batch_size is not None:
            raise ValueError(
                "stop='conditions' needs full-batch epochs (exact codes of every row): "
                "use stop='loss' with `batch_size`"
            )
        check_number(self.code_tol, "code_tol", positive=True)
        check_number(self.momentum, "momentum", positive=False)
        if self.stop_rule == "conditions" and 0 < self.tol < self.code_tol:
            raise ValueError(
                f"`tol` = {self.tol:g} is below `code_tol` = {self.code_tol:g}: the codes are "
                "solved to code_tol, so their KKT condition cannot be certified to tol (the fit "
                "would run to max_epochs); pass code_tol <= tol"
            )

    @property
    def stop_rule(self) -> str:
        """``stop``, or its default: ``"conditions"`` full batch, ``"loss"`` with minibatches."""
        if self.stop is not None:
            return self.stop
        return "loss" if self.batch_size is not None else "conditions"

    def fingerprint(self) -> dict:
        """The options a checkpoint must share to be resumed (not ``max_epochs`` or the stop
        rule: a resumed fit may run longer or stop later)."""
        return {
            "fit_bias": bool(self.fit_bias), "batch_size": self.batch_size,
            "atom_steps": int(self.atom_steps), "code_tol": float(self.code_tol),
            "code_steps": int(self.code_steps), "resample_dead": bool(self.resample_dead),
            "momentum": float(self.momentum),
        }  # fmt: skip

    def converged(self, prev, loss):
        """The loss rule: (L_{e−1} − L_e) ≤ loss_tol·|L_e| (elementwise for several seeds)."""
        return prev - loss <= self.loss_tol * np.abs(loss)

    def _loss_rule_result(self):
        """What the loss rule means: the stop (``"loss"``), else the hand-over to the polish."""
        if self.stop_rule == "loss":
            return RESULTS.successful, None
        return None, ()

    def init(self, state: _State, lam, wide_bound) -> FitState:
        """The fit before its next epoch, from an initial or resumed ``state`` (a leading seed
        axis runs several seeds). A resumed fit that had already converged stays converged."""
        cfg = _Config(
            lam, self.fit_bias, self.batch_size, self.atom_steps, self.code_tol, self.code_steps,
            self.resample_dead, float(self.momentum),
        )  # fmt: skip
        if state.D.ndim == 3:  # several seeds
            s = state.D.shape[0]
            return FitState(
                state, cfg, wide_bound, 0, np.full(s, np.inf), None, active=np.ones(s, bool)
            )
        e = int(state.epoch)
        losses = np.asarray(state.history.loss)
        prev = float(losses[e - 1]) if e > 0 else math.inf
        result = polish = None
        if e >= 2 and self.converged(float(losses[e - 2]), prev):
            result, polish = self._loss_rule_result()  # a resumed polish starts a new memory
        supports = row_supports(state.Z)  # then from each full-batch epoch (Z stays on device)
        return FitState(state, cfg, wide_bound, e, prev, supports, result=result, polish=polish)

    def step(self, fs: FitState, X, w, key) -> FitState:
        """One epoch (``key``: the fit's key, or one per seed); records the stop, if any."""
        if fs.active is not None:
            return self._step_seeds(fs, X, w, key)
        if fs.polish is not None:
            return self._polish_step(fs, X, w)
        e, state = fs.epoch, fs.state
        k = state.D.shape[0]

        guess = supports_guess(state.D, state.b, X, fs.cfg.lam, w)  # called before first codes
        cfg = _with_working_set(fs.cfg, fs.supports, k, e, guess)
        if self.batch_size is None:
            h = state.history
            tol_e = epoch_code_tol(self.code_tol, np.asarray(h.loss), e)
            cfg = dataclasses.replace(cfg, epoch_tol=to_device(tol_e, X.dtype))
            coded = e > 0 and float(np.asarray(h.l0)[e - 1]) > 0
            dead = e > 0 and int(np.asarray(h.dead)[e - 1]) > 0
            state, supports = _staged_epoch(
                cfg, state, X, w, key, fs.wide_bound, coded=coded, dead=dead
            )
        else:
            state = _epoch(cfg, state, X, w, key, fs.wide_bound)
            supports = row_supports(state.Z)
        loss = float(np.asarray(state.history.loss)[e])
        result = polish = None
        if not math.isfinite(loss):
            result = RESULTS.nonfinite
        elif self.converged(fs.prev, loss):
            result, polish = self._loss_rule_result()
        return FitState(
            state, cfg, fs.wide_bound, e + 1, loss, supports, result=result, polish=polish
        )

    def _polish_step(self, fs: FitState, X, w) -> FitState:
        """One polish step (``polish``): the L-BFGS direction, then halved steps from 1 until
        ΔL ≤ 1e-4·step·⟨g, p⟩ (after 30 halvings the memory is dropped and the preconditioned
        gradient tried; if that fails too, ``RESULTS.stalled``). The first call evaluates the
        hand-over point at exact codes: already stationary, the fit stops there unchanged (so a
        rerun of a finished fit returns it as it was), else that point is the first step. Stops
        ``successful`` once the conditions hold to tol."""
        e, s = fs.epoch, fs.state
        dt = X.dtype
        cfg = _with_working_set(fs.cfg, fs.supports, s.D.shape[0], e)
        cfg = dataclasses.replace(cfg, epoch_tol=to_device(self.code_tol, dt))
        if fs.polish == ():
            zD, zb = (to_device(np.zeros(a.shape, a.dtype), a.dtype) for a in (s.D, s.b))
            new, pt, _, sup = trial(cfg, s, zD, zb, to_device(0.0, dt), X, w, fs.wide_bound)
            if float(pt.worst) <= self.tol:  # already stationary (a rerun of a finished fit)
                return dataclasses.replace(fs, result=RESULTS.successful)
            mem = Memory.empty(s.D)
        else:
            mem, pt0 = fs.polish
            accepted = _line_search(cfg, s, mem, pt0, X, w, fs.wide_bound)
            if accepted is None and int(mem.n) > 0:  # retry along the preconditioned gradient
                mem = Memory.empty(s.D)
                accepted = _line_search(cfg, s, mem, pt0, X, w, fs.wide_bound)
            if accepted is None:
                return dataclasses.replace(fs, result=RESULTS.stalled)
            new, pt, sup = accepted
            mem = remember(mem, s, new, pt0, pt)
        loss = float(np.asarray(new.history.loss)[e])
        result = None
        if not math.isfinite(loss):
            result = RESULTS.nonfinite
        elif float(pt.worst) <= self.tol:
            result = RESULTS.successful
        return FitState(new, cfg, fs.wide_bound, e + 1, loss, sup, result=result, polish=(mem, pt))

    def _step_seeds(self, fs: FitState, X, w, keys) -> FitState:
        """One vmapped epoch of every seed; converged seeds stay frozen."""
        state, e = fs.state, fs.epoch
        s, n, k = state.Z.shape

        def guess():  # from the first seed's dictionary, before the first codes
            return guess_supports(
                np.asarray(state.D)[0], np.asarray(state.b)[0], X, float(fs.cfg.lam), w
            )

        cfg = _with_working_set(fs.cfg, row_supports(state.Z.reshape(s * n, k)), k, e, guess)
        new = _epoch_seeds(cfg, state, X, w, keys, fs.wide_bound)
        state = _keep_active(jnp.asarray(fs.active), new, state)
        loss = np.asarray(state.history.loss[:, e])
        active = fs.active & ~self.converged(fs.prev, loss)
        prev = np.where(active, loss, fs.prev)
        return FitState(state, cfg, fs.wide_bound, e + 1, prev, None, active=active)

    def terminate(self, fs: FitState) -> tuple[bool, Any]:
        """(done, result): the recorded stop, else ``max_steps_reached`` once ``max_epochs``
        epochs have run. With seeds, done once no seed is active; the result is a list, per seed
        (a seed still active ran out of epochs)."""
        if fs.active is not None:
            done = not fs.active.any() or fs.epoch >= self.max_epochs
            stops = [RESULTS.max_steps_reached if a else RESULTS.successful for a in fs.active]
            return done, stops
        if fs.result is not None:
            return True, fs.result
        return fs.epoch >= self.max_epochs, RESULTS.max_steps_reached

    def final_config(self, fs: FitState, dtype) -> _Config:
        """The configuration the returned codes are judged with: the last working set, and for
        full-batch fits the last epoch's code tolerance (re-encoded to ``code_tol`` if looser)."""
        cfg, e = fs.cfg, fs.epoch
        if fs.active is not None:
            s, n, k = fs.state.Z.shape
            return _with_working_set(cfg, row_supports(fs.state.Z.reshape(s * n, k)), k, e)
        if self.batch_size is not None or fs.polish:
            return _with_working_set(cfg, fs.supports, fs.state.D.shape[0], e)
        if e > 0:
            tol_e = epoch_code_tol(self.code_tol, np.asarray(fs.state.history.loss), e - 1)
            return dataclasses.replace(cfg, epoch_tol=to_device(tol_e, dtype))
        return cfg


def solver_of(solver: DictionarySolver | None, options: dict, **defaults) -> DictionarySolver:
    """``solver``, or one built from keyword options (over ``defaults``); not both."""
    if solver is None:
        known = {f.name for f in dataclasses.fields(DictionarySolver)}
        unknown = sorted(set(options) - known)
        if unknown:
            hint = " (`bias` is now `fit_bias`)" if "bias" in unknown else ""
            raise TypeError(
                f"unknown option(s) {unknown}{hint}; a DictionarySolver takes {sorted(known)}"
            )
        return DictionarySolver(**(defaults | options))
    if not isinstance(solver, DictionarySolver):
        raise TypeError(f"`solver` must be a DictionarySolver, got {type(solver).__name__}")
    if options:
        raise TypeError(
            f"pass the options {sorted(options)} to the DictionarySolver, not beside `solver`"
        )
    return solver


@jax.jit
def _keep_active(keep, new, old):
    """``new`` for the seeds in ``keep``, ``old`` for the others (leading seed axis)."""
    return jax.tree.map(
        lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old
    )
