"""Hypothesis-driven bad input for the public entry points (issue 20 §8, a first part): every case
is a clear ValueError/TypeError, or a finite answer that matches numpy."""

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import widelimit as wl

SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
BAD_LAMS = st.sampled_from([0.0, -1.0, -1e-30, float("nan"), float("inf"), -float("inf")])
BAD_DTYPES = st.sampled_from([np.complex64, np.complex128, object, bool, "U3"])
X0 = np.random.default_rng(0).normal(size=(30, 4))


def _entry_points(X, lam, width=3):
    key = jax.random.PRNGKey(0)
    D = np.eye(4)[:3]
    return {
        "solve_wide": lambda: wl.solve_wide(X, lam),
        "solve_wide_path": lambda: wl.solve_wide_path(X, [lam, 1.0]),
        "encode": lambda: wl.encode(D, np.zeros(4), X, lam),
        "fit_dictionary": lambda: wl.fit_dictionary(
            X, width, lam, key=key, max_epochs=1, progress=False
        ),
        "train_sae": lambda: wl.train_sae(X, width, lam, key=key, steps=2),
        "wide_lower_bound": lambda: wl.wide_lower_bound(
            X, lam, D, np.zeros((len(X), 3)), np.zeros(4)
        ),
    }


@SETTINGS
@given(lam=BAD_LAMS, which=st.sampled_from(sorted(_entry_points(X0, 1.0))))
def test_bad_lambda_is_a_clear_error(lam, which):
    with pytest.raises((ValueError, TypeError), match="lam"):
        _entry_points(X0, lam)[which]()


@SETTINGS
@given(dtype=BAD_DTYPES, which=st.sampled_from(sorted(_entry_points(X0, 1.0))))
def test_bad_dtype_is_a_clear_error(dtype, which):
    X = X0.astype(dtype) if dtype != "U3" else X0.astype(str)
    with pytest.raises((ValueError, TypeError)):
        _entry_points(X, 1.0)[which]()


@SETTINGS
@given(
    width=st.sampled_from([0, -1, -100, 2.5, "3"]),
    which=st.sampled_from(["fit_dictionary", "train_sae"]),
)
def test_bad_width_is_a_clear_error(width, which):
    with pytest.raises((ValueError, TypeError)):
        _entry_points(X0, 1.0, width)[which]()


@SETTINGS
@given(
    scale=st.sampled_from([1e-12, 1e-6, 1.0, 1e6, 1e12]),
    offset=st.sampled_from([0.0, 1.0, -1e3, 1e5]),
    n=st.integers(1, 12),
    same=st.booleans(),
)
def test_degenerate_but_valid_data_give_the_numpy_answer(scale, offset, n, same):
    X = np.random.default_rng(n).normal(size=(n, 3))
    if same:
        X = np.repeat(X[:1], n, axis=0)  # identical points
    X = X * scale + offset
    lam = 1e30 * scale  # beyond every point: W = variance/2, b = mean (closed form)
    sol = wl.solve_wide(X, lam)
    mean = X.mean(0)
    var = 0.5 * np.mean(np.sum((X - mean) ** 2, axis=1))
    assert np.isfinite(float(sol.objective))
    # identical points: numpy's own rounding leaves var ~ (eps·|x|)², where the exact answer is 0
    noise = (1e-14 * (scale + abs(offset))) ** 2
    np.testing.assert_allclose(float(sol.objective), var, rtol=1e-8, atol=noise)
    np.testing.assert_allclose(
        np.asarray(sol.bias), mean, rtol=1e-8, atol=1e-10 * scale + 1e-12 * abs(offset)
    )
