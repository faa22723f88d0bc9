"""One test per claim of SPEC §4 that check_optimality encodes."""

import jax
import numpy as np
import pytest
from helpers import huber_location_1d

import widelimit as wl


def test_strict_hierarchy_is_flagged(rng):
    # dog active on 60 %, labrador only with dog (dog's code bounded away from 0 there)
    d = 8
    dog, lab = np.eye(d)[0], np.eye(d)[1]
    n = 300
    is_dog = rng.random(n) < 0.6
    is_lab = is_dog & (rng.random(n) < 0.5)
    Z = np.stack([is_dog * rng.uniform(1, 2, n), is_lab * rng.uniform(1, 2, n)], 1)
    X = Z @ np.stack([dog, lab]) + 0.3
    rep = wl.check_optimality(X, np.stack([dog, lab]), Z, np.full(d, 0.3), 0.1)
    assert not bool(rep.passed)
    assert [0, 1] in rep.violated_pairs.tolist()  # lab's hull while dog is off is {0}
    assert float(rep.hull_hi[0, 1]) == 0 and float(rep.hull_target[0, 1]) > 0


def test_dense_feature_with_bias_is_flagged(rng):
    n = 100
    Z = np.stack([rng.uniform(1, 2, n), (rng.random(n) < 0.3) * 1.0], 1)
    D = np.eye(3)[:2]
    X = Z @ D
    rep = wl.check_optimality(X, D, Z, np.zeros(3), 0.1)
    assert [0, 1] in rep.violated_pairs.tolist()  # I_0 is empty: feature 0 is never off
    assert np.isinf(float(rep.hull_lo[0, 1]))


def test_one_d_antipodal_optimum_passes_every_check(rng):
    x = rng.normal(size=300) * 2 + 0.5
    lam = 0.3
    b = huber_location_1d(x, lam)
    Z = np.stack([np.maximum(0, x - b - lam), np.maximum(0, b - x - lam)], 1)
    rep = wl.check_optimality(
        x[:, None], np.array([[1.0], [-1.0]]), Z, np.array([b]), lam, tol=1e-6
    )
    assert bool(rep.passed), rep.summary()
    assert float(rep.wide_certificate) <= 1 + 1e-9


def test_wide_solution_passes_the_wide_certificate(rng):
    X = rng.normal(size=(60, 4))
    sol = wl.solve_wide(X, 0.5, rtol=1e-13)
    atoms, codes = sol.dictionary(X)
    rep = wl.check_optimality(X, atoms, codes, sol.bias, 0.5, tol=1e-5)
    assert float(rep.wide_certificate) <= 1 + 1e-6
    assert float(rep.code_kkt_max) <= 1e-6 and float(rep.bias_residual) <= 1e-5


def test_converged_fit_passes_code_atom_and_bias_checks(rng):
    X = rng.normal(size=(150, 5)) ** 3
    fit = wl.fit_dictionary(
        X,
        4,
        0.5,
        key=jax.random.PRNGKey(0),
        max_epochs=400,
        tol=1e-6,
        code_tol=1e-8,
        atom_steps=20,
        progress=False,
    )
    rep = wl.check_optimality(X, fit.atoms, fit.codes, fit.bias, 0.5, tol=1e-2)
    assert float(rep.code_kkt_max) <= 1e-2
    assert float(np.max(np.asarray(rep.atom_stationarity))) <= 1e-2
    assert float(rep.bias_residual) <= 1e-2


def test_mop_up_example(rng):
    # labradors = dog + labrador direction; a dog atom leaving the labrador part in the residuals
    d = 4
    dog, lab = np.eye(d)[0], np.eye(d)[1]
    n = 200
    is_lab = rng.random(n) < 0.5
    s = rng.uniform(1, 2, n)
    X = s[:, None] * (dog + 0.5 * is_lab[:, None] * lab)
    lam = 0.05
    bad = wl.check_optimality(X, dog[None], wl.encode(dog[None], None, X, lam), None, lam)
    assert float(bad.atom_stationarity[0]) > 0.1
    np.testing.assert_allclose(np.abs(np.asarray(bad.unabsorbed_direction[0])), lab, atol=1e-6)
    fixed = wl.fit_dictionary(
        X,
        1,
        lam,
        key=jax.random.PRNGKey(0),
        fit_bias=False,
        init=dog[None],
        max_epochs=300,
        tol=1e-6,
        code_tol=1e-8,
        progress=False,
    )
    good = wl.check_optimality(X, fixed.atoms, fixed.codes, None, lam, tol=1e-3)
    assert float(good.atom_stationarity[0]) <= 1e-3
    assert float(fixed.atoms[0, 1]) > 0.1  # the atom absorbed part of the labrador direction


def test_without_bias_the_hull_condition_is_the_simpler_one():
    D = np.eye(2)
    # j = 1 is active somewhere i = 0 is off: passes; j = 0 active only where 1 is on: fails
    Z = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    rep = wl.check_optimality(Z @ D, D, Z, None, 0.1)
    v = rep.violated_pairs.tolist()
    assert [1, 0] in v and [0, 1] not in v


def test_bad_inputs(rng):
    X = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="not unit-norm"):
        wl.check_optimality(X, 2 * np.eye(3), np.ones((10, 3)), None, 0.1)
    rep = wl.check_optimality(X, 2 * np.eye(3), np.ones((10, 3)), None, 0.1, normalise=True)
    np.testing.assert_allclose(
        float(rep.code_kkt_max),
        float(wl.check_optimality(X, np.eye(3), 2 * np.ones((10, 3)), None, 0.1).code_kkt_max),
    )
    with pytest.raises(ValueError, match="nonnegative"):
        wl.check_optimality(X, np.eye(3), -np.ones((10, 3)), None, 0.1)
    with pytest.raises(ValueError, match="`codes` must have shape"):
        wl.check_optimality(X, np.eye(3), np.ones((9, 3)), None, 0.1)
