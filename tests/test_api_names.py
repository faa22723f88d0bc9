"""Issue 15's names and result types: one meaning of `gap`, `fit_bias` for the flag, `width` for the
number of atoms, host records as frozen dataclasses, no bare tuples, and ``DictionarySolver``."""

import dataclasses
import inspect

import equinox as eqx
import jax
import numpy as np
import pytest

import widelimit as wl


@pytest.fixture(scope="module")
def data():
    X = np.asarray(jax.random.normal(jax.random.key(3), (60, 5))) + 0.3
    return X, 0.6


def _public_functions():
    for name in dir(wl):
        obj = getattr(wl, name)
        if inspect.isfunction(obj) or (inspect.isclass(obj) and name != "RESULTS"):
            yield name, obj


def test_one_word_for_the_number_of_atoms_and_fit_bias_for_the_flag():
    for name, obj in _public_functions():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        assert "n_atoms" not in params, name
        p = params.get("bias")
        if p is not None:  # `bias` is only ever an array (or None), never the fitting flag
            assert "bool" not in str(p.annotation) and not isinstance(p.default, bool), name
    for f in (wl.solve_wide, wl.solve_wide_path, wl.hull_table, wl.pair_hull, wl.DictionarySolver):
        assert "fit_bias" in inspect.signature(f).parameters


def test_the_old_flag_is_refused_not_ignored(data):
    X, lam = data
    with pytest.raises(TypeError):
        wl.solve_wide(X, lam, bias=False)
    with pytest.raises(TypeError):
        wl.fit_dictionary(X, 2, lam, key=jax.random.key(0), bias=False)


def test_gap_is_relative_to_the_bound_everywhere(data):
    X, lam = data
    sol = wl.solve_wide(X, lam, rtol=1e-3)
    np.testing.assert_allclose(sol.gap_abs, sol.objective - sol.dual_objective, rtol=1e-12)
    np.testing.assert_allclose(sol.gap, sol.gap_abs / abs(sol.dual_objective), rtol=1e-12)
    fit = wl.fit_dictionary(X, 3, lam, key=jax.random.key(0), max_epochs=4, progress=False)
    np.testing.assert_allclose(fit.gap_abs, fit.loss - fit.wide_bound, rtol=1e-12)
    np.testing.assert_allclose(fit.gap, fit.gap_abs / abs(fit.wide_bound), rtol=1e-12)
    h = fit.history.trimmed(int(fit.n_epochs))
    np.testing.assert_allclose(h["gap"], (h["loss"] - fit.wide_bound) / abs(fit.wide_bound))
    lb = wl.wide_lower_bound(X, lam, fit.atoms, fit.codes, fit.bias, wide=sol)
    np.testing.assert_allclose(lb.gap_abs, lb.loss - lb.lower_bound, rtol=1e-12)
    np.testing.assert_allclose(lb.gap, lb.gap_abs / abs(lb.lower_bound), rtol=1e-12)
    s = wl.width_sweep(X, [2, 3], lam, key=jax.random.key(0), max_epochs=4, progress=False)
    np.testing.assert_allclose(s.gap, (s.loss - s.wide_bound) / abs(s.wide_bound), rtol=1e-12)


def test_host_records_are_frozen_dataclasses_and_nothing_returns_a_bare_tuple(data):
    X, lam = data
    for cls in (wl.Sweep, wl.SplitTree, wl.PairClasses, wl.SAEReport):
        assert dataclasses.is_dataclass(cls) and not issubclass(cls, eqx.Module), cls
        assert cls.__dataclass_params__.frozen, cls
    fit = wl.fit_dictionary(X, 3, lam, key=jax.random.key(0), max_epochs=3, progress=False)
    g = wl.grow(fit, X, 5, key=jax.random.key(1))
    assert isinstance(g, wl.Grown) and g.atoms.shape == (5, 5) and g.codes.shape == (60, 5)
    s = wl.split_atoms(fit.atoms, X, fit.codes, fit.bias, key=jax.random.key(2))
    assert isinstance(s, wl.Split) and s.atoms.shape == (6, 5) and s.parents.shape == (6,)
    for f in (wl.grow, wl.split_atoms, wl.apply_perturbation, wl.train_sae):
        ret = str(inspect.signature(inspect.unwrap(f)).return_annotation)
        assert ret.split("[")[0] in ("Grown", "Split", "Perturbed", "SAETraining"), (f, ret)


def test_dictionary_solver_init_step_terminate_is_what_fit_dictionary_drives(data):
    X, lam = data
    key = jax.random.key(4)
    solver = wl.DictionarySolver(max_epochs=6, loss_tol=0, stop="loss", momentum=0.5)
    fit = wl.fit_dictionary(X, 3, lam, key=key, solver=solver, progress=False)
    # the same epochs by hand, from the same start
    from widelimit._finite.epochs import initial_state
    from widelimit._finite.init import data_init

    wide = wl.solve_wide(X, lam, throw=False)
    Xj = jax.numpy.asarray(X)
    w = jax.numpy.ones(X.shape[0])
    D0 = data_init(Xj, wide.bias, 3, key)
    fs = solver.init(initial_state(D0, wide.bias, X.shape[0], 6), fit.lam, wide.dual_objective)
    epochs = 0
    while not solver.terminate(fs)[0]:
        fs = solver.step(fs, Xj, w, key)
        epochs += 1
    done, result = solver.terminate(fs)
    assert done and epochs == 6 and result == wl.RESULTS.max_steps_reached
    assert fit.result == wl.RESULTS.max_steps_reached and int(fit.n_epochs) == 6
    np.testing.assert_allclose(fs.state.D, fit.atoms, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fs.prev, np.asarray(fit.history.loss)[5], rtol=1e-12)


def test_solver_options_and_errors(data):
    X, lam = data
    key = jax.random.key(0)
    a = wl.fit_dictionary(X, 2, lam, key=key, max_epochs=3, fit_bias=False, progress=False)
    b = wl.fit_dictionary(
        X, 2, lam, key=key, solver=wl.DictionarySolver(max_epochs=3, fit_bias=False), progress=False
    )
    np.testing.assert_array_equal(a.atoms, b.atoms)
    assert not a.fit_bias and np.all(np.asarray(a.bias) == 0)
    with pytest.raises(TypeError, match="DictionarySolver"):
        wl.fit_dictionary(X, 2, lam, key=key, solver=wl.DictionarySolver(), max_epochs=3)
    with pytest.raises(TypeError, match="solver"):
        wl.fit_dictionary(X, 2, lam, key=key, solver="adam")
    with pytest.raises(TypeError):
        wl.fit_dictionary(X, 2, lam, key=key, max_epoch=3)  # a typo is not ignored
    for bad, err in [
        (dict(max_epochs=0), ValueError),
        (dict(max_epochs=2.5), TypeError),
        (dict(tol=-1.0), ValueError),
        (dict(tol=1e-6), ValueError),  # below code_tol = 1e-4: never certifiable
        (dict(code_tol=0.0), ValueError),
        (dict(momentum=float("nan")), ValueError),
        (dict(batch_size=0), ValueError),
        (dict(fit_bias="no"), TypeError),
    ]:
        with pytest.raises(err):
            wl.DictionarySolver(**bad)
    with pytest.raises(ValueError, match="batch_size"):
        wl.fit_dictionary_seeds(
            X, 2, lam, keys=jax.random.split(key, 2), solver=wl.DictionarySolver(batch_size=8)
        )
    s = wl.width_sweep(
        X, [1, 2], lam, key=key, solver=wl.DictionarySolver(max_epochs=3), progress=False
    )
    assert all(int(f.n_epochs) <= 3 for f in s.fits)
