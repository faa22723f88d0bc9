"""Stopping on optimality (issue 19): a default full-batch fit polishes until code KKT, atom
stationarity and the bias hold to ``tol``; the loss rule alone (``stop="loss"``) stops short of them
on real activations. The polish's gradient is the envelope gradient of the reduced loss
g(D, b) = min_{Z ≥ 0} L(D, Z, b), checked against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl
from widelimit._finite.epochs import _Config
from widelimit._finite.polish import _evaluate


@pytest.fixture(scope="module")
def real():
    X = wl.datasets.activations(400).X
    lam = 0.25 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    return X, lam


def _first_order(X, fit, lam):
    rep = wl.check_optimality(X, fit.atoms, fit.codes, fit.bias, lam)
    return rep, max(
        float(rep.code_kkt_max), float(rep.atom_stationarity.max()), float(rep.bias_residual)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_fit_passes_the_conditions_the_loss_rule_misses(real, dtype):
    X, lam = real
    X = X.astype(dtype)
    kw = dict(key=jax.random.key(0), progress=False)
    loss_only = wl.fit_dictionary(X, 16, lam, stop="loss", **kw)
    rep, worst = _first_order(X, loss_only, lam)
    assert loss_only.converged and not rep.passed and worst > 1e-3  # the loss rule stops short
    fit = wl.fit_dictionary(X, 16, lam, **kw)
    rep, worst = _first_order(X, fit, lam)
    assert fit.result == wl.RESULTS.successful and fit.stationary() and worst <= 1e-3
    assert bool(rep.passed), rep.summary()
    n = int(fit.n_epochs)
    assert n > int(loss_only.n_epochs)  # it polished past the loss rule's stop
    # the same alternating epochs up to the hand-over, then L never increases
    e = int(loss_only.n_epochs)
    np.testing.assert_allclose(fit.history.loss[:e], loss_only.history.loss[:e], rtol=1e-6)
    losses = np.asarray(fit.history.loss[:n], np.float64)
    assert np.all(np.diff(losses) <= 1e-6 * np.abs(losses[1:]))
    assert float(fit.loss) < float(loss_only.loss)


def test_polish_stops_at_max_epochs_and_resumes_from_a_checkpoint(real, tmp_path):
    X, lam = real
    kw = dict(key=jax.random.key(0), progress=False, checkpoint_dir=str(tmp_path))
    e = int(
        wl.fit_dictionary(X, 16, lam, key=jax.random.key(0), stop="loss", progress=False).n_epochs
    )
    short = wl.fit_dictionary(X, 16, lam, max_epochs=e + 2, **kw)
    assert short.result == wl.RESULTS.max_steps_reached and not short.stationary()
    done = wl.fit_dictionary(X, 16, lam, max_epochs=500, **kw)
    assert done.resumed_from == e + 2
    assert done.result == wl.RESULTS.successful and done.stationary()
    assert float(done.loss) <= float(short.loss)


def test_stop_rule_options_are_checked():
    with pytest.raises(ValueError, match="stop"):
        wl.DictionarySolver(stop="gap")
    with pytest.raises(ValueError, match="full-batch"):
        wl.DictionarySolver(stop="conditions", batch_size=8)
    assert wl.DictionarySolver(batch_size=8).stop_rule == "loss"
    assert wl.DictionarySolver().stop_rule == "conditions"


@pytest.mark.parametrize("fit_bias", [True, False])
def test_polish_gradient_is_the_envelope_gradient(fit_bias):
    """⟨∇g, V⟩ equals the central difference of g(normalise(D + tV), b + tv) with exact codes."""
    r = np.random.default_rng(0)
    X = jnp.asarray(r.normal(size=(60, 5)) + np.array([2.0, 0, 0, 0, 0]))
    D = jnp.asarray(r.normal(size=(4, 5)))
    D = D / jnp.linalg.norm(D, axis=1, keepdims=True)
    b = jnp.asarray(r.normal(size=5) * 0.3) if fit_bias else jnp.zeros(5)
    lam, w = 0.4, jnp.ones(60)

    def g(D, b):
        Z = wl.solve_codes(D, b, X, lam, tol=1e-13, max_steps=100000).codes
        return float(wl.dictionary_loss(X, D, Z, b, lam)), Z

    cfg = _Config(jnp.asarray(lam), fit_bias, None, 10, 1e-13, 100000, False)
    pt = _evaluate(cfg, D, b, X, w, g(D, b)[1])
    V = jnp.asarray(r.normal(size=(4, 5)))
    V = V - jnp.sum(V * D, axis=1, keepdims=True) * D  # a tangent direction
    v = jnp.asarray(r.normal(size=5)) if fit_bias else jnp.zeros(5)
    h = 1e-5

    def at(t):
        Dt = D + t * V
        return g(Dt / jnp.linalg.norm(Dt, axis=1, keepdims=True), b + t * v)[0]

    fd = (at(h) - at(-h)) / (2 * h)
    want = float(jnp.vdot(pt.gD, V) + jnp.vdot(pt.gb, v))
    np.testing.assert_allclose(want, fd, rtol=1e-5, atol=1e-9)
    assert abs(want) > 1e-3  # a real slope, not 0 = 0


def test_a_polish_that_cannot_lower_the_loss_says_stalled(real, monkeypatch):
    """When no step of the line search lowers L (here: every trial step reports ΔL > 0), the fit
    stops with ``RESULTS.stalled`` and the last accepted state, not a silent success."""
    from widelimit._finite import solver as solver_module

    X, lam = real
    real_trial = solver_module.trial

    def no_decrease(cfg, s, pD, pb, step, *args):
        new, pt, delta, sup = real_trial(cfg, s, pD, pb, step, *args)
        return new, pt, delta if float(step) == 0 else abs(delta) + 1.0, sup

    monkeypatch.setattr(solver_module, "trial", no_decrease)
    kw = dict(key=jax.random.key(0), progress=False)
    fit = wl.fit_dictionary(X, 16, lam, **kw)
    handover = int(wl.fit_dictionary(X, 16, lam, stop="loss", **kw).n_epochs)
    assert fit.result == wl.RESULTS.stalled and not fit.converged
    assert int(fit.n_epochs) == handover + 1  # the hand-over point, then no accepted step
    assert not fit.stationary()
    with pytest.raises(RuntimeError, match="could not lower the loss"):
        wl.fit_dictionary(X, 16, lam, throw=True, **kw)


def test_the_polish_compiles_each_of_its_programs_once(real, caplog):
    """Every polish step reuses the compiled programs: its state stays arrays (a Python bool
    written into it would be a static leaf, and the second step would compile again). Its code
    solve is the epochs' own program: ``_codes_accept`` compiles once for the whole fit (the
    polish's ``trial`` was a program of its own, with a second copy of the code solve)."""
    import logging

    X, lam = real
    X = X[:397]
    jax.clear_caches()  # so that this fit compiles its programs (once) whatever ran before
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        fit = wl.fit_dictionary(X, 16, lam, key=jax.random.key(0), progress=False)
    names = [r.getMessage().split(" with ")[0] for r in caplog.records]
    steps = int(fit.n_epochs) - int(
        wl.fit_dictionary(X, 16, lam, key=jax.random.key(0), stop="loss", progress=False).n_epochs
    )
    assert fit.stationary() and steps >= 3  # several polish steps ran
    for program in ("_codes_accept", "_trial_point", "_measure"):  # (caches cleared above)
        assert names.count(f"Compiling jit({program})") == 1, names
    assert "Compiling jit(trial)" not in names, names
    for program in ("direction", "remember"):  # (these may be compiled by an earlier test)
        assert names.count(f"Compiling jit({program})") <= 1, names
