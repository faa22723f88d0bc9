"""Hypothesis-driven bad input for the public entry points (issue 20 §8): every case is a clear
ValueError/TypeError, or a finite answer that matches numpy (or the same call on clean input)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import widelimit as wl

SETTINGS = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
BAD_LAMS = st.sampled_from([0.0, -1.0, -1e-30, float("nan"), float("inf"), -float("inf")])
BAD_DTYPES = st.sampled_from([np.complex64, np.complex128, object, bool, "U3"])
X0 = np.random.default_rng(0).normal(size=(30, 4))


def _sae(D):
    return wl.ReluSAE(jnp.asarray(D), jnp.zeros(len(D)), jnp.asarray(D), jnp.zeros(D.shape[1]))


def _entry_points(X, lam, width=3):
    """name → a call on X returning arrays (the answer to compare)."""
    key = jax.random.PRNGKey(0)
    D = np.eye(4)[:3]
    n = len(X) if hasattr(X, "__len__") else 0
    Z = np.abs(np.random.default_rng(1).normal(size=(n, 3)))
    b = np.zeros(4)
    return {
        "solve_wide": lambda: wl.solve_wide(X, lam).objective,
        "solve_wide_path": lambda: wl.solve_wide_path(X, [lam, 1.0]).objective,
        "encode": lambda: wl.encode(D, b, X, lam),
        "solve_codes": lambda: wl.solve_codes(D, b, X, lam).codes,
        "fit_dictionary": lambda: (
            wl.fit_dictionary(X, width, lam, key=key, max_epochs=1, progress=False).atoms
        ),
        "fit_dictionary_seeds": lambda: (
            wl.fit_dictionary_seeds(X, width, lam, keys=jax.random.split(key, 2), max_epochs=1)[
                0
            ].atoms
        ),
        "width_sweep": lambda: (
            wl.width_sweep(X, [1, width], lam, key=key, max_epochs=1, progress=False).loss
        ),
        "train_sae": lambda: wl.train_sae(X, width, lam, key=key, steps=2, progress=False).losses,
        "wide_lower_bound": lambda: wl.wide_lower_bound(X, lam, D, Z, b).residual_bound,
        "check_optimality": lambda: wl.check_optimality(X, D, Z, b, lam).atom_stationarity,
        "dictionary_loss": lambda: wl.dictionary_loss(X, D, Z, b, lam),
        "check_sae": lambda: wl.check_sae(_sae(D), X, lam).dictionary.atom_stationarity,
        "amortisation_gap": lambda: wl.amortisation_gap(_sae(D), X, lam).gap,
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


def _layouts(X, tmp):
    """The same numbers in other memory layouts and precisions: (name, array, the clean array
    whose answer it must give)."""
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    mm = np.lib.format.open_memmap(str(tmp / "x.npy"), mode="w+", dtype=X.dtype, shape=X.shape)
    mm[:] = X
    mm.flush()
    half = X.astype(np.float16)
    return [
        ("fortran", np.asfortranarray(X), X),
        ("strided", wide[:, ::2], X),
        ("memmap", np.load(tmp / "x.npy", mmap_mode="r"), X),
        ("list", X.tolist(), X),
        ("int", np.round(X * 4).astype(np.int32), np.round(X * 4)),
        ("float16", half, half.astype(np.float32)),
        (
            "bfloat16",
            jnp.asarray(X, jnp.bfloat16),
            np.asarray(jnp.asarray(X, jnp.bfloat16), np.float32),
        ),
    ]


LAYOUT_X = np.random.default_rng(3).normal(size=(24, 4))


@pytest.mark.parametrize("which", sorted(_entry_points(LAYOUT_X, 0.5)))
def test_memory_layouts_and_half_precisions_give_the_clean_answer(which, tmp_path):
    for name, X, clean in _layouts(LAYOUT_X, tmp_path):
        got = np.asarray(_entry_points(X, 0.5)[which](), np.float64)
        # ints and half precisions are computed in float32 (float_dtype); the rest keep float64
        want_dtype = np.float32 if name in ("float16", "bfloat16", "int") else clean.dtype
        want = np.asarray(_entry_points(clean.astype(want_dtype), 0.5)[which](), np.float64)
        np.testing.assert_array_equal(got, want, err_msg=f"{which}, {name}")


@pytest.mark.parametrize("which", sorted(_entry_points(X0, 1.0)))
def test_empty_data_and_no_features_are_clear_errors(which):
    for X in (np.zeros((0, 4)), np.zeros((5, 0)), np.zeros(4), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError):
            _entry_points(X, 1.0)[which]()


def test_hull_table_validates_its_codes():
    D = np.eye(4)[:3]
    for Z, msg in ((np.zeros((0, 3)), "≥ 1 row"), (np.zeros((5, 2)), "columns"),
                   (-np.ones((5, 3)), "negative"), (np.full((5, 3), np.nan), "non-finite")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            wl.hull_table(Z, D)


def _fit_loss(X, lam, key):
    fit = wl.fit_dictionary(X, 3, lam, key=key, max_epochs=2, progress=False)
    if not np.isfinite(float(fit.loss)):  # an overflowing loss is never a success
        assert fit.result == wl.RESULTS.out_of_range
    return fit.loss


def _scaled_calls(s):
    """name → (call on data scaled by s, the power of s its answer scales with)."""
    X, D, b = X0 * s, np.eye(4)[:3], X0.mean(0) * s
    Z = np.abs(np.random.default_rng(1).normal(size=(len(X0), 3))) * s
    key = jax.random.PRNGKey(0)
    return {
        "solve_wide": (lambda: wl.solve_wide(X, 0.5 * s).objective, 2),
        "encode": (lambda: wl.encode(D, b, X, 0.5 * s), 1),
        "fit_dictionary": (lambda: _fit_loss(X, 0.5 * s, key), 2),
        "dictionary_loss": (lambda: wl.dictionary_loss(X, D, Z, b, 0.5 * s), 2),
        "wide_lower_bound": (lambda: wl.wide_lower_bound(X, 0.5 * s, D, Z, b).residual_bound, 2),
    }


@SETTINGS
@given(
    scale=st.sampled_from([1e-300, 1e-150, 1e-30, 1.0, 1e30, 1e150, 1e300]),
    which=st.sampled_from(sorted(_scaled_calls(1.0))),
)
def test_huge_and_tiny_scales_are_right_or_refused(scale, which):
    # float64: the answer scales exactly (s is a power of two) or the call refuses; never a wrong
    # number. Up to 1e±150 (squares in range) every call must answer.
    s = 2.0 ** round(np.log2(scale))
    call, power = _scaled_calls(1.0)[which]
    base = np.asarray(call(), np.float64)
    call, _ = _scaled_calls(s)[which]
    try:
        got = np.asarray(call(), np.float64)
    except (ValueError, RuntimeError) as e:
        assert 1e-150 > scale or scale > 1e150, f"{which} refused scale {scale}: {e}"
        assert "range" in str(e) or "finite" in str(e) or "NaN" in str(e), e
        return
    with np.errstate(over="ignore", under="ignore"):
        want = base * np.float64(s) ** power  # inf where the exact answer overflows float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("lam", [1e20, 1e300])
def test_lambda_beyond_every_point_gives_the_mean(lam):
    X = X0 * 3 + 1
    codes = wl.encode(np.eye(4)[:3], X.mean(0), X, lam)
    np.testing.assert_array_equal(np.asarray(codes), 0.0)
    fit = wl.fit_dictionary(X, 3, lam, key=jax.random.PRNGKey(0), max_epochs=3, progress=False)
    np.testing.assert_allclose(np.asarray(fit.bias), X.mean(0), rtol=1e-10)
    np.testing.assert_allclose(
        float(fit.loss), 0.5 * np.mean(np.sum((X - X.mean(0)) ** 2, 1)), rtol=1e-10
    )


def test_more_atoms_than_points_is_a_valid_fit():
    X = X0[:3]
    fit = wl.fit_dictionary(X, 5, 0.1, key=jax.random.PRNGKey(0), progress=False)
    assert np.isfinite(float(fit.loss))
    assert float(fit.loss) >= float(fit.wide_bound) * (1 - 1e-9)  # the certified bound holds
    assert float(fit.gap) < 1e-6  # three points, five atoms: every point gets its own atom
