"""Property tests (hypothesis): certificate, equivariances, and the finite-width lower bound."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import special_ortho_group

import widelimit as wl

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 5))
    lam = draw(st.floats(0.05, 5.0))
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, d)) * draw(st.floats(0.1, 10)) + r.normal(size=d) * 3
    return X, lam, r


@SETTINGS
@given(problems())
def test_gap_nonnegative_and_within_tolerance(p):
    X, lam, _ = p
    sol = wl.solve_wide(X, lam, rtol=1e-9, max_steps=5000)
    assert 0 <= float(sol.gap) <= 1e-9
    assert float(sol.dual_objective) <= float(sol.objective)


@SETTINGS
@given(problems())
def test_translation_and_rotation_equivariance(p):
    X, lam, r = p
    b = np.asarray(wl.solve_wide(X, lam, rtol=1e-13, max_steps=10000).bias)
    t = r.normal(size=X.shape[1]) * 5
    bt = np.asarray(wl.solve_wide(X + t, lam, rtol=1e-13, max_steps=10000).bias)
    np.testing.assert_allclose(bt, b + t, atol=2e-5 * (1 + np.abs(t).max()))
    if X.shape[1] > 1:
        Q = special_ortho_group.rvs(X.shape[1], random_state=int(r.integers(1 << 30)))
        bq = np.asarray(wl.solve_wide(X @ Q.T, lam, rtol=1e-13, max_steps=10000).bias)
        np.testing.assert_allclose(bq, Q @ b, atol=2e-5 * (1 + np.abs(X).max()))


@SETTINGS
@given(problems(), st.integers(1, 8), st.booleans())
def test_wide_optimum_lower_bounds_random_dictionaries(p, k, with_bias):
    X, lam, r = p
    n, d = X.shape
    atoms = r.normal(size=(k, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.abs(r.normal(size=(n, k))) * r.uniform(0, 2)
    bias = r.normal(size=d) if with_bias else None
    W = wl.solve_wide(X, lam, fit_bias=with_bias, rtol=1e-12, max_steps=10000)
    lb = wl.wide_lower_bound(X, lam, atoms, codes, bias, wide=W)
    L = float(wl.dictionary_loss(X, atoms, codes, bias, lam))
    np.testing.assert_allclose(float(lb.loss), L, rtol=1e-12)
    assert float(W.objective) <= L * (1 + 1e-9) + 1e-12
    assert float(lb.residual_bound) <= float(W.objective) * (1 + 1e-9) + 1e-12
    assert float(lb.lower_bound) >= float(lb.residual_bound)
    assert float(lb.gap_abs) >= -1e-9 * max(1.0, L)
    assert np.sign(float(lb.gap)) == np.sign(float(lb.gap_abs))  # a negative gap is not hidden


def test_residual_bound_is_tight_at_the_wide_optimum(rng):
    X = rng.normal(size=(30, 3))
    W = wl.solve_wide(X, 0.5, rtol=1e-13)
    atoms, codes = W.dictionary(X)
    lb = wl.wide_lower_bound(X, 0.5, atoms, codes, W.bias)
    np.testing.assert_allclose(float(lb.loss), float(W.objective), rtol=1e-10)
    np.testing.assert_allclose(float(lb.residual_bound), float(W.objective), rtol=1e-6)


def test_loss_formula_by_hand():
    X = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    atoms = jnp.array([[1.0, 0.0]])
    codes = jnp.array([[0.5], [0.0]])
    b = jnp.array([0.0, 1.0])
    # r = [[0.5,-1],[0,1]] -> (0.25+1+1)/4 = 0.5625; sparsity 0.3*0.5/2 = 0.075
    np.testing.assert_allclose(float(wl.dictionary_loss(X, atoms, codes, b, 0.3)), 0.6375)
