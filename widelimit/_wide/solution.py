"""``WideSolution``: the result of a wide-limit solve (a pytree)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._core.results import RESULTS
from .._core.validate import ensure_finite


class WideSolution(eqx.Module):
    """Solution of W(λ) = min_{b,M} (1/2N) Σ w_n||x_n − b − m_n||² + (λ/N) Σ w_n||m_n||.

    Each encoded point is its own atom: m_n = code_n · (x_n − b)/||x_n − b|| with
    code_n = max(0, ||x_n − b|| − λ) (with nonnegative atoms, x_n − b is replaced by [x_n − b]₊).

    Attributes:
        bias: b, shape (n_features,); zeros when solved without a bias.
        lam: λ.
        objective: W at ``bias`` (the primal value).
        dual_objective: a certified lower bound on W(λ) (value of a feasible dual point).
        gap: (objective − dual_objective)/|dual_objective|, the certified relative duality gap
            (relative to the bound, as every ``gap`` in widelimit).
        gap_abs: objective − dual_objective.
        num_steps: bias updates taken (data passes = num_steps + 1 after the warm start).
        code_norms: ||m_n||, shape (n_samples,).
        encoded: mask of points with ||m_n|| > 0, shape (n_samples,).
        result: a ``RESULTS`` member.
    """

    bias: Float[Array, " n_features"]
    lam: Float[Array, ""]
    objective: Float[Array, ""]
    dual_objective: Float[Array, ""]
    gap: Float[Array, ""]
    gap_abs: Float[Array, ""]
    num_steps: Int[Array, ""]
    code_norms: Float[Array, " n_samples"]
    encoded: Bool[Array, " n_samples"]
    result: RESULTS
    nonneg_atoms: bool = eqx.field(static=True, default=False)
    fit_bias: bool = eqx.field(static=True, default=True)

    def _centred(self, X):
        y = jnp.asarray(X, self.bias.dtype) - self.bias
        return jnp.maximum(y, 0) if self.nonneg_atoms else y

    def atoms(
        self, X: Float[Array, "n_samples n_features"]
    ) -> Float[Array, "n_samples n_features"]:
        """Unit atom (x_n − b)/||x_n − b|| of every encoded point; zero rows elsewhere."""
        p = self._centred(X)
        norm = jnp.linalg.norm(p, axis=1, keepdims=True)
        safe = jnp.where(self.encoded[:, None], norm, 1)
        return jnp.where(self.encoded[:, None], p / safe, 0)

    def codes(self) -> Float[Array, " n_samples"]:
        """The code of each point on its own atom, ||m_n||."""
        return self.code_norms

    def reconstruction(
        self, X: Float[Array, "n_samples n_features"]
    ) -> Float[Array, "n_samples n_features"]:
        """b + m_n for every point."""
        return self.bias + self.code_norms[:, None] * self.atoms(X)

    def residuals(
        self, X: Float[Array, "n_samples n_features"]
    ) -> Float[Array, "n_samples n_features"]:
        """r_n = x_n − b − m_n; ||r_n|| ≤ λ at the optimum (the wide certificate)."""
        return jnp.asarray(X, self.bias.dtype) - self.reconstruction(X)

    def dictionary(self, X):
        """(atoms, codes) as a finite dictionary of the encoded points only (eager, numpy shapes).

        ``atoms`` has shape (n_encoded, n_features); ``codes`` (n_samples, n_encoded) is diagonal.
        """
        enc = np.asarray(self.encoded)
        atoms = np.asarray(self.atoms(X))[enc]
        codes = np.zeros((enc.shape[0], atoms.shape[0]), dtype=atoms.dtype)
        codes[np.flatnonzero(enc), np.arange(atoms.shape[0])] = np.asarray(self.code_norms)[enc]
        return atoms, codes


def check_result(sol: WideSolution, X=None) -> WideSolution:
    """The one error path of every wide solve (optimistix's ``result.error_if``).

    Traced (inside a user's jit/vmap): ``eqx.error_if`` on any unsuccessful result. Eager: the first
    failure (the first λ of a path) as ``RuntimeError``, or ``ValueError`` when non-finite data
    caused it."""
    ok = sol.result == RESULTS.successful
    if isinstance(ok, jax.core.Tracer):
        if ok.ndim == 0:
            return sol.result.error_if(sol, ~ok)
        return eqx.error_if(sol, ~ok, "a wide solve did not succeed (non-finite, or max_steps)")
    bad = np.flatnonzero(~np.asarray(ok).reshape(-1))
    if bad.size == 0:
        return sol
    path = np.ndim(ok) > 0
    one = jax.tree.map(lambda a: a[bad[0]], sol) if path else sol
    if one.result == RESULTS.nonfinite and X is not None:
        ensure_finite(X, "X")  # ValueError when the data caused it
    where = f"λ = {float(one.lam):.4g}: " if path else ""
    raise RuntimeError(
        where
        + RESULTS[one.result]
        + f" (gap {float(one.gap):.3g} after {int(one.num_steps)} steps)"
    )
