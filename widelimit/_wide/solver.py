"""``WideSolver``: certified bias iteration for the wide-limit problem (SPEC §2).

The optimal bias is the Huber M-estimate of location, Σ_n w_n ψ(x_n − b) = 0 with
ψ(y) = y·min(1, λ/||y||). Each step is the IRLS/majorise-minimise update
b ← b + Σ w_n ψ(x_n − b) / Σ w_n a_n, a_n = min(1, λ/||x_n − b||) (monotone in W), or a gradient
step b ← b + Σ w_n r_n/Σ w_n for nonnegative atoms (f is 1-smooth). The loop stops when the
certified relative duality gap (``_wide_certificate``) is ≤ rtol.
"""

from __future__ import annotations

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._core.objective import relative_gap
from .._core.results import RESULTS
from .certificate import (
    PointSums,
    certificate_from_sums,
    point_sums,
    slack_levels,
)
from .data_pass import data_pass, fast_pass, weighted_row_sum
from .iterate import iterate
from .solution import WideSolution


def default_rtol(dtype) -> float:
    """1e-6 in float32, 1e-10 in float64."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def resolvable_rtol(rtol, dtype) -> float:
    """``rtol`` (default ``default_rtol``), clipped with a warning to 8·eps of ``dtype``: a
    certificate tighter than the dtype resolves would claim digits that are not there."""
    if rtol is None:
        return default_rtol(dtype)
    floor = 8 * float(jnp.finfo(dtype).eps)
    if rtol < floor:
        warnings.warn(
            f"rtol = {rtol:g} is below what {jnp.dtype(dtype).name} resolves; using {floor:.3g} "
            "(use float64 for tighter certificates)",
            stacklevel=3,
        )
        return floor
    return float(rtol)


class WideSolver(eqx.Module):
    """Configuration of the wide-limit solve; ``__call__`` runs it under ``lax.while_loop``."""

    rtol: float
    max_steps: int = eqx.field(static=True)
    fit_bias: bool = eqx.field(static=True, default=True)
    nonneg_atoms: bool = eqx.field(static=True, default=False)
    chunked: bool = eqx.field(static=True, default=True)
    # ``fast_pass`` (unrestricted atoms, unsharded rows); off when vmapped over λ, where its
    # ``lax.cond`` would run both of its branches
    raw_sums: bool = eqx.field(static=True, default=True)

    def sums(self, n1, q, w, G) -> PointSums:
        """The certificate's ``PointSums`` of a pass, at slack levels fitted to its G."""
        return point_sums(n1, q, w, slack_levels(G, jnp.sum(w)))

    def step(self, b, lam, sums: PointSums, G):
        """One bias update from a pass at ``b``: b + λG/Σ w a (IRLS), or b + λG/Σ w (nonneg)."""
        return b + lam * G / (sums.n_eff if self.nonneg_atoms else sums.wa)

    def finish(self, b, lam, q, sums: PointSums, G, Y, steps):
        """Certificate and ``WideSolution`` at the bias ``b`` from its pass."""
        return self.finish_from_sums(b, lam, sums, G, Y, steps, lam * jnp.maximum(q - 1, 0), q > 1)

    def finish_from_sums(self, b, lam, sums: PointSums, G, Y, steps, code_norms, encoded):
        """``finish`` with the code norms λ·max(q − 1, 0) and the mask q > 1 given (the streamed
        solve computes them on the host)."""
        primal, gap = certificate_from_sums(sums, G, Y, self.fit_bias)
        rel = relative_gap(gap, primal - gap)
        finite = jnp.isfinite(primal) & jnp.all(jnp.isfinite(b))
        result = RESULTS.where(
            finite,
            RESULTS.where(rel <= self.rtol, RESULTS.successful, RESULTS.max_steps_reached),
            RESULTS.nonfinite,
        )
        scale = lam * lam
        return WideSolution(
            bias=b,
            lam=lam,
            objective=scale * primal,
            dual_objective=scale * (primal - gap),
            gap=rel,
            gap_abs=scale * gap,
            num_steps=jnp.asarray(steps, jnp.int32),
            code_norms=code_norms,
            encoded=encoded,
            result=result,
            nonneg_atoms=self.nonneg_atoms,
            fit_bias=self.fit_bias,
        )

    def unfinished(self, sums: PointSums, G, Y):
        """Whether the certified relative gap of a pass is still above rtol (and the objective
        finite): the loop's condition, without its step limit."""
        primal, gap = certificate_from_sums(sums, G, Y, True)
        return (relative_gap(gap, primal - gap) > self.rtol) & jnp.isfinite(primal)

    def __call__(self, X, w, lam, b0=None) -> WideSolution:
        """Solve from ``b0`` (default: the weighted mean). ``objective`` is differentiable in X, w
        and λ (``envelope``); the loop itself is never differentiated."""
        Xs, ws, lams = (lax.stop_gradient(a) for a in (X, w, lam))
        sol = self._solve(Xs, ws, lams, None if b0 is None else lax.stop_gradient(b0))
        value = envelope(X, w, lam, sol.bias, sol.objective, self.nonneg_atoms, self.fit_bias)
        return eqx.tree_at(lambda s: s.objective, sol, value)

    def _solve(self, X, w, lam, b0) -> WideSolution:
        fast = self.raw_sums and self.chunked and not self.nonneg_atoms and self.fit_bias
        wx = None
        if fast or (self.fit_bias and b0 is None):
            wx = weighted_row_sum(w, X) if self.chunked else w @ X
        if not self.fit_bias:
            b0 = jnp.zeros(X.shape[1], X.dtype)
        elif b0 is None:
            b0 = wx / jnp.sum(w)

        def stats(b):
            if fast:
                n1, q, G, Y = fast_pass(X, w, b, lam, wx)
            else:
                n1, q, G, Y = data_pass(X, w, b, lam, self.nonneg_atoms, self.chunked)
            return q, self.sums(n1, q, w, G), G, Y

        s = iterate(self, stats, b0, lam)
        return self.finish(s.bias, lam, s.q, s.sums, s.G, s.Y, s.steps)


def huber_objective(X, w, lam, b, nonneg_atoms: bool = False):
    """W at a fixed bias: (1/Σw) Σ_n w_n [H_λ(||y_n||) + ½||[x_n − b]₋||²·nonneg], y_n = x_n − b
    (or [x_n − b]₊), H_λ(r) = r²/2 (r ≤ λ), λr − λ²/2 (r > λ). Safe to differentiate at r = 0."""
    y = X - b
    extra = 0.0
    if nonneg_atoms:
        extra = 0.5 * jnp.sum(jnp.square(jnp.minimum(y, 0)), axis=1)
        y = jnp.maximum(y, 0)
    r2 = jnp.sum(y * y, axis=1)
    inner = r2 <= lam * lam
    r = jnp.sqrt(jnp.where(inner, lam * lam, r2))
    H = jnp.where(inner, 0.5 * r2, lam * r - 0.5 * lam * lam)
    return jnp.sum(w * (H + extra)) / jnp.sum(w)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def envelope(X, w, lam, b, value, nonneg_atoms: bool, fit_bias: bool = True):
    """``value`` = W(λ) at its optimal bias b, with the envelope theorem's derivative: at the
    optimum ∂W/∂b = 0, so dW = d(huber_objective) at fixed b. ∂W/∂x_n = w_n ψ(x_n − b)/Σw,
    ∂W/∂λ = Σ w_n max(||x_n − b|| − λ, 0)/Σw, ∂W/∂w_n = (H_n − W)/Σw. With a bias W is translation
    invariant, so the weighted mean of ψ (zero at the exact optimum, rounding at the computed b) is
    projected out of ∂W/∂x: Σ_n ∂W/∂x_n = 0 exactly."""
    return value


@envelope.defjvp
def _envelope_jvp(nonneg, fit_bias, primals, tangents):
    X, w, lam, b, value = primals
    dX, dw, dlam = tangents[:3]
    if fit_bias:  # translation invariance: dX's weighted mean moves b along with X
        dX = dX - weighted_mean(dX, lax.stop_gradient(w))
    f = lambda X, w, lam: huber_objective(X, w, lam, lax.stop_gradient(b), nonneg)  # noqa: E731
    _, dv = jax.jvp(f, (X, w, lam), (dX, dw, dlam))
    return value, dv.astype(value.dtype)


def weighted_mean(X, w):
    return weighted_row_sum(w, X) / jnp.sum(w)


solve_in_memory = eqx.filter_jit(lambda solver, X, w, lam, b0=None: solver(X, w, lam, b0))


def _vmapped(solver, X, w, lams, b0):
    return jax.vmap(lambda lam: solver(X, w, lam, b0))(lams)


solve_path_vmap = eqx.filter_jit(_vmapped)
