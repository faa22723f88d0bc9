"""Smoke test at the declared dependency floors (``make test-floors``): every layer runs once."""

import jax
import jax.numpy as jnp
import numpy as np

import widelimit as wl

X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
sol = wl.solve_wide(X, 0.5)
assert sol.result == wl.RESULTS.successful and float(sol.gap) <= 1e-5, sol
path = wl.solve_wide_path(X, np.array([0.3, 0.5, 1.0], np.float32))
assert np.allclose(path.objective[1], sol.objective, rtol=1e-5)
g = jax.grad(lambda X: wl.solve_wide(X, 0.5).objective)(jnp.asarray(X))
assert np.all(np.isfinite(np.asarray(g)))
fit = wl.fit_dictionary(X, 4, 0.5, key=jax.random.key(0), max_epochs=5, progress=False)
assert np.isfinite(float(fit.loss)) and float(fit.loss) >= float(sol.objective) * (1 - 1e-5)
rep = wl.check_optimality(X, fit.atoms, fit.codes, fit.bias, 0.5)
assert np.isfinite(float(rep.code_kkt_max))
Z = jax.jit(lambda: wl.encode(fit.atoms, fit.bias, X, 0.5))()
assert Z.shape == (200, 4)
print("floors smoke: ok", jax.__version__)
