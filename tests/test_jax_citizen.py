"""widelimit inside another JAX program: public array functions under a user's jit, vmap and grad.

Eager calls keep their ValueErrors; traced calls check values with ``eqx.error_if``. W(λ) is
differentiable through the envelope theorem (``_wide/solver.py: envelope``); its gradients are
checked against central finite differences.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl
from widelimit._analysis.hull_table import dense_hull_table

# eqx.error_if raises EquinoxRuntimeError under filter_jit, JaxRuntimeError under a plain jax.jit
RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)


@pytest.fixture
def problem():
    r = np.random.default_rng(3)
    X = r.normal(size=(60, 4))
    D = r.normal(size=(6, 4))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    b = X.mean(0)
    Z = wl.encode(D, b, X, 0.4)
    return jnp.asarray(X), jnp.asarray(D), jnp.asarray(Z), jnp.asarray(b), 0.4


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-9)


def _calls(X, D, Z, b, lam):
    """Every public array function, on the given arrays: name → value."""
    rep = wl.check_optimality(X, D, Z, b, lam)
    return {
        "encode": wl.encode(D, b, X, lam),
        "decode": wl.decode(D, b, Z),
        "dictionary_loss": wl.dictionary_loss(X, D, Z, b, lam),
        "wide_lower_bound": wl.wide_lower_bound(X, lam, D, Z, b).lower_bound,
        "check_optimality": (rep.passed, rep.code_kkt_max, rep.atom_stationarity, rep.hull_margin),
        "solve_wide": wl.solve_wide(X, lam).objective,
        "solve_wide_path": wl.solve_wide_path(X, jnp.array([lam, 2 * lam])).objective,
    }


def test_public_functions_under_jit_with_arguments(problem):
    eager = _calls(*problem)
    traced = jax.jit(_calls)(*problem)
    assert set(eager) == set(traced)
    for name in eager:
        _same(eager[name], traced[name])


def test_public_functions_under_jit_with_captured_arrays(problem):
    """Concrete jax.Arrays closed over by the user's jitted function (today: bool() on tracers)."""
    eager = _calls(*problem)
    traced = jax.jit(lambda: _calls(*problem))()
    for name in eager:
        _same(eager[name], traced[name])


def test_public_functions_under_vmap_over_lam(problem):
    X, D, Z, b, _ = problem
    lams = jnp.array([0.3, 0.4, 0.6])
    batched = jax.vmap(lambda lam: _calls(X, D, Z, b, lam))(lams)
    for i, lam in enumerate(np.asarray(lams)):
        eager = _calls(X, D, Z, b, float(lam))
        for name in eager:
            _same(eager[name], jax.tree.map(lambda a, i=i: a[i], batched[name]))


def test_traced_bad_values_raise(problem):
    X, D, Z, b, lam = problem
    bad = b.at[0].set(jnp.nan)
    with pytest.raises(ValueError, match="bias"):
        wl.encode(D, bad, X, lam)  # eager: a clear error (it gave all-zero codes before)
    for f in (
        lambda b: wl.encode(D, b, X, lam),
        lambda b: wl.dictionary_loss(X, D, Z, b, lam),
        lambda b: wl.check_optimality(X, D, Z, b, lam).passed,
    ):
        with pytest.raises(RUNTIME_ERRORS, match="bias"):
            jax.block_until_ready(jax.jit(f)(bad))
    with pytest.raises(RUNTIME_ERRORS, match="nonnegative"):
        jax.jit(lambda Z: wl.check_optimality(X, D, Z, b, lam).passed)(-Z)


def test_dense_hull_table_equals_streamed(rng):
    """The traced hull table against the host one (shortcuts + exact pass), off the diagonal."""
    Z = np.maximum(rng.normal(size=(200, 9)) - 0.8, 0)
    Z[:, 0] = np.abs(rng.normal(size=200)) + 0.1  # a dense feature, active everywhere
    D = rng.normal(size=(9, 5))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    w = rng.uniform(0.5, 2, 200)
    for bias in (True, False):
        host = wl.hull_table(Z, D, weights=w, fit_bias=bias)
        traced = jax.jit(dense_hull_table, static_argnums=3)(jnp.asarray(Z), D, w, bias)
        off = ~np.eye(9, dtype=bool)
        for f in ("lo", "hi", "target", "margin"):
            np.testing.assert_allclose(
                np.asarray(getattr(traced, f))[off], np.asarray(getattr(host, f))[off], rtol=1e-12
            )
        np.testing.assert_array_equal(traced.support, host.support)


def _fd(f, x, i, eps=1e-6):
    e = np.zeros_like(x)
    e.flat[i] = eps
    return (float(f(x + e)) - float(f(x - e))) / (2 * eps)


@pytest.mark.parametrize(
    "fit_bias, nonneg", [(True, False), (False, False), (True, True)], ids=["bias", "no_bias", "nn"]
)
def test_grad_of_wide_limit_matches_finite_differences(rng, fit_bias, nonneg):
    X = rng.normal(size=(80, 3)) + (0.3 if nonneg else 0)
    w = rng.uniform(0.5, 2, 80)
    lam = 0.6

    def W(X, lam, w):
        return wl.solve_wide(
            X, lam, weights=w, fit_bias=fit_bias, nonneg_atoms=nonneg, rtol=1e-13
        ).objective

    gX, gl, gw = (
        np.asarray(g) for g in jax.grad(W, argnums=(0, 1, 2))(jnp.asarray(X), lam, jnp.asarray(w))
    )
    for i in (0, 7, 100, 201):
        assert np.isclose(gX.flat[i], _fd(lambda x: W(x, lam, w), X, i), rtol=1e-5, atol=1e-9)
    assert np.isclose(gl, _fd(lambda v: W(X, v[0], w), np.array([lam]), 0), rtol=1e-5)
    for i in (3, 50):
        assert np.isclose(gw[i], _fd(lambda v: W(X, lam, v), w, i), rtol=1e-5, atol=1e-9)
    # forward mode agrees with reverse mode
    t = rng.normal(size=X.shape)
    _, fwd = jax.jvp(lambda X: W(X, lam, w), (jnp.asarray(X),), (jnp.asarray(t),))
    assert np.isclose(fwd, np.sum(gX * t), rtol=1e-10)


def test_grad_of_wide_limit_envelope_formula(rng):
    """∂W/∂x_n = w_n ψ(x_n − b)/Σw (closed form), finite also for a point exactly at the bias."""
    X = np.concatenate([rng.normal(size=(40, 2)), np.zeros((1, 2))])
    X -= np.median(X, axis=0)
    sol = wl.solve_wide(X, 0.5, rtol=1e-13)
    X[-1] = np.asarray(sol.bias)  # a point at the optimal bias: zero distance
    sol = wl.solve_wide(X, 0.5, rtol=1e-13)
    g = jax.grad(lambda X: wl.solve_wide(X, 0.5, rtol=1e-13).objective)(jnp.asarray(X))
    y = X - np.asarray(sol.bias)
    r = np.linalg.norm(y, axis=1, keepdims=True)
    psi = y * np.minimum(1, 0.5 / np.maximum(r, 1e-300))
    # Σ_n ψ(x_n − b) = 0 at the optimal b; at the computed b it is ~1e-7, and the
    # derivative (the envelope's JVP) projects it out: W is translation invariant, so Σ_n ∂W/∂x_n = 0
    np.testing.assert_allclose(np.asarray(g), psi / len(X), atol=1e-8)
    np.testing.assert_allclose(np.asarray(g), (psi - psi.mean(0)) / len(X), atol=1e-11)
    np.testing.assert_allclose(np.asarray(g).sum(0), 0, atol=1e-13)
    assert np.all(np.isfinite(np.asarray(g)))


def test_grad_of_dictionary_loss_matches_finite_differences(problem):
    X, D, Z, b = (np.asarray(a) for a in problem[:4])
    lam = problem[4]
    Z = Z + 0.05  # away from the kink of |z| at 0

    def L(X, D, Z, b, lam):
        return wl.dictionary_loss(X, D, Z, b, lam)

    grads = jax.grad(L, argnums=(0, 1, 2, 3, 4))(X, D, Z, b, lam)
    args = [X, D, Z, b, np.array(lam)]
    for k in range(5):
        for i in (0, args[k].size - 1):

            def f(v, k=k):
                a = list(args)
                a[k] = v if k < 4 else float(v)
                return L(*a)

            assert np.isclose(np.asarray(grads[k]).flat[i], _fd(f, args[k], i), rtol=1e-6)
