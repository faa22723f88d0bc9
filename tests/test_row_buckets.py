"""Row buckets (``widelimit._core.row_buckets``): a small in-memory fit or encode pads its rows to a
bucket, so that a new N reuses the programs of another N in its bucket, and its answer is the
unpadded one."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl
from widelimit._core import row_buckets
from widelimit._finite.epochs import _resample_dead


def _compiles(caplog, fn, *args, **kwargs):
    """(fn(*args, **kwargs), the XLA compilations it logged)."""
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        out = fn(*args, **kwargs)
        jax.block_until_ready(out)
    return out, [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    atoms = rng.normal(size=(12, 6))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    Z = rng.exponential(size=(260, 12)) * (rng.random((260, 12)) < 0.3)
    return Z @ atoms + 0.5 + 0.05 * rng.normal(size=(260, 6))


def test_a_fit_compiles_nothing_for_a_new_n_in_its_bucket_and_equals_the_unpadded_fit(
    data, caplog, monkeypatch
):
    """N = 250 compiles the fit for its bucket (256 rows); N = 251 and 243 (same bucket) compile
    nothing. Each fit equals the same fit unpadded (buckets off): loss, atoms, bias, codes and
    the history's L0, which counts the real rows only (the padded ones are copies of row 0)."""
    lam, key = 0.3, jax.random.key(0)
    assert row_buckets.row_bucket(250) == row_buckets.row_bucket(243) == 256
    wl.fit_dictionary(data[:250], 16, lam, key=key, progress=False)
    fits = {}
    for n in (251, 243):
        fits[n], compiled = _compiles(
            caplog, wl.fit_dictionary, data[:n], 16, lam, key=key, progress=False
        )
        assert compiled == [], compiled
        assert fits[n].codes.shape == (n, 16)
    monkeypatch.setattr(row_buckets, "SMALL", 0)  # no padding from here
    for n, fit in fits.items():
        ref = wl.fit_dictionary(data[:n], 16, lam, key=key, progress=False)
        assert ref.codes.shape == (n, 16)
        np.testing.assert_allclose(float(fit.loss), float(ref.loss), rtol=1e-9)
        np.testing.assert_allclose(np.asarray(fit.atoms), np.asarray(ref.atoms), atol=1e-6)
        np.testing.assert_allclose(np.asarray(fit.bias), np.asarray(ref.bias), atol=1e-6)
        # codes solved to the fit's code tolerance (code_tol·λ = 3e-5) in both
        np.testing.assert_allclose(np.asarray(fit.codes), np.asarray(ref.codes), atol=1e-4 * lam)
        e = int(ref.n_epochs)
        np.testing.assert_allclose(
            np.asarray(fit.history.l0)[:e], np.asarray(ref.history.l0)[:e], atol=1e-9
        )
        assert fit.converged and ref.converged


def test_encode_compiles_nothing_for_a_new_n_in_its_bucket(data, caplog):
    """``encode``/``solve_codes`` on an array: N = 251 and 243 after 250 compile nothing, and the
    codes equal the unpadded solve (inside ``jit``, where nothing is padded) with the same worst
    KKT residual; a warm start ``init`` is padded alike."""
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(80, 6))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    b, lam = data.mean(0), 0.2
    wl.encode(atoms, b, data[:250], lam)
    for n in (251, 243):
        sol, compiled = _compiles(caplog, wl.solve_codes, atoms, b, data[:n], lam)
        assert compiled == [], compiled
        ref = jax.jit(lambda X: wl.solve_codes(atoms, b, X, lam))(jnp.asarray(data[:n]))
        assert sol.codes.shape == (n, 80)
        np.testing.assert_allclose(np.asarray(sol.codes), np.asarray(ref.codes), atol=1e-8)
        np.testing.assert_allclose(float(sol.kkt), float(ref.kkt), rtol=1e-6, atol=1e-12)
        warm = wl.solve_codes(atoms, b, data[:n], lam, init=sol.codes)
        np.testing.assert_allclose(np.asarray(warm.codes), np.asarray(ref.codes), atol=1e-6)


def test_check_optimality_compiles_nothing_for_a_new_n_and_equals_the_unpadded_report(
    data, caplog, monkeypatch
):
    """``check_optimality`` in memory: N = 251 and 243 after 250 compile nothing, and every field
    of the report (the points wanting an atom: one per real row) equals the unpadded one."""
    lam = 0.3
    fit = wl.fit_dictionary(data, 16, lam, key=jax.random.key(1), progress=False)
    Z, w = np.asarray(fit.codes), np.linspace(0.5, 2.0, len(data))
    wl.check_optimality(data[:250], fit.atoms, Z[:250], fit.bias, lam, weights=w[:250])
    reports = {}
    for n in (251, 243):
        reports[n], compiled = _compiles(
            caplog, wl.check_optimality, data[:n], fit.atoms, Z[:n], fit.bias, lam, weights=w[:n]
        )
        assert compiled == [], compiled
    monkeypatch.setattr(row_buckets, "SMALL", 0)
    for n, report in reports.items():
        ref = wl.check_optimality(data[:n], fit.atoms, Z[:n], fit.bias, lam, weights=w[:n])
        assert report.wants_new_atom.shape == (n,)
        for got, want in zip(jax.tree.leaves(report), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


def test_row_buckets_pad_only_small_concrete_arrays():
    """Padding stays under a quarter of N; large or traced inputs are not padded."""
    assert all(n <= row_buckets.row_bucket(n) < 1.25 * n + 8 for n in range(1, 5000))
    small = np.zeros((1001, 8))
    assert row_buckets.padded_rows(small) == 1024
    assert row_buckets.padded_rows(small, width=2048) is None  # N·K over SMALL
    assert row_buckets.padded_rows(np.zeros((1024, 8))) is None  # already a bucket
    assert jax.jit(lambda X: jnp.asarray(row_buckets.padded_rows(X) is None))(small)
    padded = row_buckets.pad_rows(np.arange(6.0).reshape(3, 2), 5)
    np.testing.assert_array_equal(np.asarray(padded)[3:], [[0, 1], [0, 1]])
    np.testing.assert_array_equal(
        np.asarray(row_buckets.cut_rows(padded, 3)), [[0, 1], [2, 3], [4, 5]]
    )


def test_resampling_seeds_dead_atoms_from_rows_of_positive_weight_only():
    """Dead atoms are replaced by the residual directions of the worst-reconstructed rows of
    positive weight (a bucket's padded rows have weight 0); with fewer such rows than dead
    atoms, the last of them is reused, as with fewer rows."""
    X = jnp.asarray(np.diag([5.0, 4.0, 3.0, 2.0]))
    D = jnp.asarray(np.eye(4)[[1, 0, 3, 2]])  # unit atoms, all unused (Z = 0): all dead
    Z, b, key = jnp.zeros((4, 4)), jnp.zeros(4), jax.random.key(0)
    w = jnp.asarray([0.0, 1.0, 1.0, 0.0])  # the worst row (0) does not count
    new, replaced = _resample_dead(D, Z, X, b, key, w)
    assert bool(jnp.all(replaced))
    # rows 1 and 2 (residual norms 4 and 3), then row 2 again: never rows 0 or 3
    np.testing.assert_allclose(np.asarray(new), np.eye(4)[[1, 2, 2, 2]])


def test_host_checks_answer_like_jax_and_leave_tracers_and_large_arrays_to_jax(monkeypatch):
    """Checks of small concrete CPU arrays run in numpy (no program compiled per shape); tracers
    and arrays past the size limit take the jitted path, with the same answers."""
    from widelimit._core import validate
    from widelimit._core.validate import all_finite, any_negative, host_view, max_abs

    x = jnp.asarray([[1.0, -2.0], [3.0, 0.5]])
    bad = x.at[0, 0].set(jnp.nan)
    seen = []
    jax.jit(lambda y: seen.append(host_view(y)) or y)(x)
    assert seen == [None] and host_view(x) is not None
    for limit in (validate._HOST_CHECK_MAX, 1):  # numpy, then the jitted path
        monkeypatch.setattr(validate, "_HOST_CHECK_MAX", limit)
        assert (host_view(x) is None) == (limit == 1)
        assert all_finite(x) and not all_finite(bad)
        assert any_negative(x) and not any_negative(jnp.abs(x))
        assert max_abs(x) == 3.0
