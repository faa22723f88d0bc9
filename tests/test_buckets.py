"""Width buckets (issue 18): a fit of K atoms runs at a bucket size with zero atoms, so that fits of
nearby widths share their compiled programs, and the padding changes nothing in the fit."""

import logging

import jax
import numpy as np
import pytest

import widelimit as wl
from widelimit._finite import fit as fit_module
from widelimit._finite.buckets import width_bucket

# the programs of a full-batch fit's epochs and polish
_FIT_PROGRAMS = ("_codes_accept", "_dense_accept", "_update", "_resample_state", "_trial_point",
                 "_measure", "direction", "remember")  # fmt: skip


def test_buckets_hold_the_width_with_at_most_a_third_padding():
    buckets = set()
    for k in range(1, 5000):
        kb = width_bucket(k)
        assert kb >= k and (kb - k) / kb < 1 / 3, (k, kb)
        buckets.add(kb)
    assert len(buckets) <= 2 * np.log2(5000) + 2  # O(log K) programs for every width up to K


def _rays(n=120, seed=0):
    """Two rays with little noise: at λ = 1 a width of 5 leaves atoms dead, so resampling runs."""
    r = np.random.default_rng(seed)
    V = np.eye(4)[:2]
    s = r.exponential(1.0, size=n) + 0.5
    return (V[r.integers(0, 2, n)] * s[:, None] + 0.02 * r.normal(size=(n, 4))) + 1.0


def test_padded_fit_equals_the_unpadded_fit(monkeypatch):
    X = _rays()
    kw = dict(key=jax.random.key(3), progress=False, max_epochs=80)
    padded = wl.fit_dictionary(X, 5, 1.0, **kw)  # bucket 6: one zero atom
    monkeypatch.setattr(fit_module, "width_bucket", lambda k: k)
    plain = wl.fit_dictionary(X, 5, 1.0, **kw)
    n = int(plain.n_epochs)
    assert int(padded.n_epochs) == n
    assert int(np.sum(plain.history.resampled[:n])) > 0  # the dead-atom path ran
    for f in ("resampled", "dead", "l0"):
        np.testing.assert_array_equal(getattr(padded.history, f)[:n], getattr(plain.history, f)[:n])
    assert padded.atoms.shape == (5, 4) and padded.codes.shape == (120, 5)
    np.testing.assert_allclose(padded.atoms, plain.atoms, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(padded.codes, plain.codes, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(padded.loss), float(plain.loss), rtol=1e-10)
    assert padded.result == plain.result and padded.parents.shape == (5,)


@pytest.mark.parametrize("widths", [(5, 6), (13, 16)])
def test_a_new_width_in_the_same_bucket_compiles_no_fit_program(widths, caplog):
    X = _rays(n=137 + widths[0], seed=1)  # a row count no other test compiles for
    kw = dict(key=jax.random.key(0), progress=False, max_epochs=40)

    def fit_programs(k):
        with jax.log_compiles(), caplog.at_level(logging.WARNING):
            caplog.clear()
            fit = wl.fit_dictionary(X, k, 0.3, **kw)
        compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
        return fit, [m for m in compiled if any(f"Compiling jit({p})" in m for p in _FIT_PROGRAMS)]

    _, first = fit_programs(widths[0])
    assert any("_codes_accept" in m for m in first), first  # the log names the programs
    fit, second = fit_programs(widths[1])
    assert second == [], second
    assert fit.atoms.shape == (widths[1], 4)
