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
Zd = wl.encode(fit.atoms, fit.bias, X, 0.5, devices="all", sparse=False)  # shard_map's API
assert np.abs(np.asarray(Zd) - np.asarray(Z)).max() <= 1e-3
# scaled wide solves, fit status, every SAE architecture (equinox/optax floors)
assert int(wl.solve_wide(X + 100, 0.5).num_steps) < 50
assert wl.solve_wide(X * 1e20, 5e19, throw=False).result == wl.RESULTS.out_of_range
assert fit.result == wl.RESULTS.max_steps_reached and np.isfinite(float(fit.code_kkt))
for arch, lam, kw in [("standard", 0.1, {}), ("topk", None, {"k": 2}), ("abstopk", None, {"k": 2}),
                      ("batchtopk", None, {"k": 2}), ("matryoshka", None, {"k": 2, "widths": (4, 8)}),
                      ("jumprelu", 0.1, {}), ("gated", 0.1, {})]:  # fmt: skip
    res = wl.train_sae(X, 8, lam, architecture=arch, key=jax.random.key(0), steps=20, **kw)
    assert np.all(np.isfinite(np.asarray(res.losses))), arch
    assert wl.check_sae(res.sae, X, 0.5).sae_loss >= wl.solve_wide(X, 0.5).objective * (1 - 1e-5)
print("floors smoke: ok", jax.__version__)
