"""Every bad input raises a clear error naming the argument, before any work."""

import numpy as np
import pytest

import widelimit as wl

X = np.random.default_rng(0).normal(size=(20, 3))


@pytest.mark.parametrize(
    "args,kw,exc,match",
    [
        ((np.array([[1.0, np.nan]]), 1.0), {}, ValueError, "`X` contains NaN"),
        ((np.array([[1.0, np.inf], [0.0, 1.0]]), 1.0), {}, ValueError, "`X` contains NaN"),
        ((np.ones(5), 1.0), {}, ValueError, "`X` must be 2-D"),
        ((np.ones((2, 2, 2)), 1.0), {}, ValueError, "`X` must be 2-D"),
        ((np.ones((0, 3)), 1.0), {}, ValueError, "`X` has 0 rows"),
        ((X, 0.0), {}, ValueError, "`lam`"),
        ((X, -1.0), {}, ValueError, "`lam`"),
        ((X, np.nan), {}, ValueError, "`lam`"),
        ((X, np.inf), {}, ValueError, "`lam`"),
        ((X, "a"), {}, TypeError, "`lam`"),
        ((X, 1.0), {"weights": -np.ones(20)}, ValueError, "`weights` must be >= 0"),
        ((X, 1.0), {"weights": np.ones(19)}, ValueError, r"`weights` must have shape \(20,\)"),
        ((X, 1.0), {"weights": np.zeros(20)}, ValueError, "`weights` are all zero"),
        ((X, 1.0), {"weights": np.full(20, np.nan)}, ValueError, "`weights` contains NaN"),
        ((X.astype(complex), 1.0), {}, TypeError, "`X` has dtype complex"),
        ((X.astype(object), 1.0), {}, TypeError, "`X` has dtype object"),
        ((np.array([["a", "b"]]), 1.0), {}, TypeError, "`X` has dtype"),
        ((X, 1.0), {"rtol": -1.0}, ValueError, "`rtol`"),
        ((X, 1.0), {"init": np.ones(2)}, ValueError, "`init`"),
        ((X, 1.0), {"max_steps": -1}, ValueError, "`max_steps`"),
    ],
)
def test_bad_input(args, kw, exc, match):
    with pytest.raises(exc, match=match):
        wl.solve_wide(*args, **kw)


def test_bad_path_lams():
    with pytest.raises(ValueError, match="`lams`"):
        wl.solve_wide_path(X, [0.1, -1.0])
    with pytest.raises(ValueError, match="`lams`"):
        wl.solve_wide_path(X, [])
    with pytest.raises(ValueError, match="`method`"):
        wl.solve_wide_path(X, [0.1], method="loop")


def test_integer_data_is_promoted():
    s = wl.solve_wide(np.arange(12).reshape(6, 2), 1.0)
    assert s.bias.dtype == np.float32


def test_bad_dictionary_inputs():
    atoms = np.eye(3)
    codes = np.ones((20, 3))
    with pytest.raises(ValueError, match="`codes` must have shape"):
        wl.dictionary_loss(X, atoms, codes[:5], None, 1.0)
    with pytest.raises(ValueError, match="`atoms` has 2 features"):
        wl.dictionary_loss(X, atoms[:, :2], codes, None, 1.0)
    with pytest.raises(ValueError, match="`bias` must have shape"):
        wl.wide_lower_bound(X, 1.0, atoms, codes, np.ones(4))
    with pytest.raises(ValueError, match="`lam`"):
        wl.wide_lower_bound(X, 0.0, atoms, codes, None)
