"""Finite-width dictionaries, codes, splitting, the ReLU SAE and the sklearn-style estimator."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

import widelimit as wl
from widelimit._finite.codes import code_tiers


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_encode_matches_sklearn_and_satisfies_kkt(rng):
    d, k, lam = 10, 15, 0.2
    D = unit(rng.normal(size=(k, d)))
    b = rng.normal(size=d)
    X = (
        b
        + np.abs(rng.normal(size=(30, k))) * (rng.random((30, k)) < 0.3) @ D
        + 0.05 * rng.normal(size=(30, d))
    )
    Z = np.asarray(wl.encode(D, b, X, lam, tol=1e-10, max_steps=100000))
    for n in range(X.shape[0]):
        # sklearn: (1/(2·n_rows))||y − Aw||² + α||w||₁ with n_rows = d, so α = λ/d
        ref = Lasso(alpha=lam / d, positive=True, fit_intercept=False, tol=1e-14, max_iter=100000)
        ref.fit(D.T, X[n] - b)
        np.testing.assert_allclose(Z[n], ref.coef_, atol=1e-6)
    corr = (X - b - Z @ D) @ D.T  # ⟨d_i, r_n⟩
    assert np.all(Z >= 0)
    np.testing.assert_allclose(corr[Z > 0], lam, atol=1e-7)
    assert np.all(corr[Z == 0] <= lam + 1e-7)


@pytest.mark.parametrize("k", [12, 80])  # 80 > 64: codes by per-point working sets
def test_full_batch_loss_never_increases_and_stays_above_the_wide_bound(rng, k):
    X = rng.normal(size=(200, 6)) ** 3 + 1
    fit = wl.fit_dictionary(
        X, k, 0.4, key=jax.random.PRNGKey(0), max_epochs=25, progress=False, loss_tol=0, stop="loss"
    )
    h = fit.history.trimmed(int(fit.n_epochs))
    assert np.all(np.diff(h["loss"]) <= 1e-12 * np.abs(h["loss"][1:]))
    lb = wl.wide_lower_bound(X, 0.4, fit.atoms, fit.codes, fit.bias)
    assert float(fit.loss) >= float(fit.wide_bound) and float(lb.loss) >= float(lb.residual_bound)
    np.testing.assert_allclose(float(lb.loss), float(fit.loss), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(fit.atoms), axis=1), 1, rtol=1e-12)
    assert np.all(np.asarray(fit.codes) >= 0)
    assert np.all(h["gap"] > 0)


def _planted(seed, n=1500, d=16, k=24):
    r = np.random.default_rng(seed)
    D = unit(r.normal(size=(k, d)))
    Z = (r.random((n, k)) < 0.08) * r.uniform(0.5, 2.0, (n, k))
    return Z @ D + 2 * r.normal(size=d) + 0.01 * r.normal(size=(n, d))


def test_momentum_extrapolates_and_rejections_keep_the_loss_monotone():
    X = _planted(3)
    fits = {
        m: wl.fit_dictionary(
            X,
            48,
            0.1,
            key=jax.random.PRNGKey(1),
            max_epochs=8,
            loss_tol=0,
            stop="loss",
            progress=False,
            momentum=m,
        )  # fmt: skip
        for m in (0.0, 0.8, 50.0)
    }
    loss = {m: f.history.trimmed(8)["loss"] for m, f in fits.items()}
    # the first two epochs (encode, plain step) agree; the inertial steps then get further
    np.testing.assert_allclose(loss[0.8][:2], loss[0.0][:2], rtol=1e-6)
    assert loss[0.8][-1] < loss[0.0][-1] - 1e-3 * abs(loss[0.0][-1])
    for m, f in fits.items():  # β = 50 overshoots: rejected steps fall back to the plain update
        assert np.all(np.diff(loss[m]) <= 1e-6 * np.abs(loss[m][1:])), m
        np.testing.assert_allclose(np.linalg.norm(np.asarray(f.atoms), axis=1), 1, rtol=1e-5)
        # the codes held are exact for the atoms held (to code_tol)
        Z = wl.encode(f.atoms, f.bias, X, 0.1, init=f.codes, tol=1e-6, max_steps=20000)
        assert float(f.loss) <= float(wl.dictionary_loss(X, f.atoms, Z, f.bias, 0.1)) * (1 + 1e-4)


def test_epoch_code_tolerance_schedule_and_exact_returned_codes():
    from widelimit._finite.epochs import epoch_code_tol

    losses = np.array([10.0, 9.0, 8.99, 8.98999999])
    assert epoch_code_tol(1e-4, losses, 0) == epoch_code_tol(1e-4, losses, 1) == 1e-2
    assert epoch_code_tol(1e-4, losses, 2) == 1e-2  # a 11 % decrease: loose codes
    np.testing.assert_allclose(epoch_code_tol(1e-4, losses, 3), 0.01 / 8.99)
    assert epoch_code_tol(1e-4, losses, 4) == 1e-4  # converging: exact codes
    assert epoch_code_tol(0.1, losses, 2) == 0.1  # never tighter than asked
    # a fit stopped while its epochs still ran loose returns codes solved to code_tol
    X = _planted(5, n=400)
    lam, code_tol = 0.1, 1e-5
    fit = wl.fit_dictionary(X, 40, lam, key=jax.random.PRNGKey(2), max_epochs=3, loss_tol=0, stop="loss",
                            progress=False, code_tol=code_tol)  # fmt: skip
    D, Z, b = (np.asarray(a, np.float64) for a in (fit.atoms, fit.codes, fit.bias))
    grad = lam - (X - b - Z @ D) @ D.T
    kkt = np.abs(Z - np.maximum(Z - grad, 0)).max()
    assert kkt <= 2 * code_tol * lam, kkt
    assert (Z > 0).any()


def test_planted_dictionary_recovery():
    r = np.random.default_rng(7)
    d, k, n = 16, 24, 1500
    D = unit(r.normal(size=(k, d)))
    b = r.normal(size=d) * 2
    Z = (r.random((n, k)) < 0.08) * r.uniform(0.5, 2.0, (n, k))
    X = b + Z @ D + 0.01 * r.normal(size=(n, d))
    fit = wl.fit_dictionary(
        X, 2 * k, 0.05, key=jax.random.PRNGKey(1), max_epochs=40, progress=False
    )
    cos = np.abs(np.asarray(fit.atoms) @ D.T).max(0)
    assert np.mean(cos > 0.98) >= 0.9, np.sort(cos)


def test_one_d_data_gives_the_antipodal_pair(rng):
    x = rng.normal(size=(300, 1)) * 2 + 0.7
    lam = 0.3
    fit = wl.fit_dictionary(
        x,
        2,
        lam,
        key=jax.random.PRNGKey(0),
        init=np.array([[1.0], [-1.0]]),
        max_epochs=60,
        progress=False,
    )
    assert sorted(np.asarray(fit.atoms).ravel().tolist()) == [-1.0, 1.0]
    from helpers import huber_location_1d

    b = huber_location_1d(x[:, 0], lam)
    np.testing.assert_allclose(float(fit.bias[0]), b, atol=1e-4)
    plus = int(np.argmax(np.asarray(fit.atoms)[:, 0]))
    np.testing.assert_allclose(
        np.asarray(fit.codes)[:, plus], np.maximum(0, x[:, 0] - b - lam), atol=1e-3
    )
    wide = wl.solve_wide(x, lam)
    np.testing.assert_allclose(float(fit.loss), float(wide.objective), rtol=1e-4)


def test_rays_width_r_by_splitting_reaches_the_wide_optimum():
    r = np.random.default_rng(3)
    R, d, n = 4, 6, 400
    V = unit(r.normal(size=(R, d)))
    lab = r.integers(0, R, n)
    X = V[lab] * r.uniform(0.5, 3.0, (n, 1))
    lam = 0.2
    wide = wl.solve_wide(X, lam, fit_bias=False)
    key = jax.random.PRNGKey(0)
    fit = wl.fit_dictionary(X, 1, lam, key=key, fit_bias=False, max_epochs=50, progress=False)
    while fit.atoms.shape[0] < R:
        atoms, parents, codes = wl.grow(fit, X, min(2 * fit.atoms.shape[0], R), key=key)
        fit = wl.fit_dictionary(
            X,
            atoms.shape[0],
            lam,
            key=key,
            fit_bias=False,
            init=atoms,
            max_epochs=200,
            progress=False,
            parents=parents,
        )
    assert fit.atoms.shape[0] == R
    np.testing.assert_allclose(float(fit.loss), float(wide.objective), rtol=1e-4)


def test_split_atoms_records_parents(rng):
    X = rng.normal(size=(50, 4))
    D = unit(rng.normal(size=(3, 4)))
    Z = np.asarray(wl.encode(D, None, X, 0.1))
    atoms, parents = wl.split_atoms(
        D, X, Z, None, which=np.array([2, 0]), key=jax.random.PRNGKey(0)
    )
    assert atoms.shape == (5, 4) and list(np.asarray(parents)) == [0, 1, 2, 2, 0]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(atoms), axis=1), 1, rtol=1e-12)
    # the children are symmetric about the parent
    mid = unit(np.asarray(atoms[2] + atoms[3])[None])[0]
    np.testing.assert_allclose(mid, D[2], atol=1e-10)
    np.testing.assert_allclose(np.asarray(atoms[1]), D[1])


def test_sae_training_and_amortisation_gap(rng):
    X = (np.abs(rng.normal(size=(500, 3, 1))) * unit(rng.normal(size=(3, 8)))[None]).sum(1)
    X = X * (rng.random((500, 1)) < 0.8) + 0.5
    res = wl.train_sae(X, 6, 0.1, key=jax.random.PRNGKey(0), steps=400, batch_size=64)
    sae, losses = res.sae, res.losses
    assert res.seconds > 0
    assert float(losses[-50:].mean()) < float(losses[:50].mean())
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.W_dec), axis=1), 1, rtol=1e-6)
    gap = float(wl.amortisation_gap(sae, X, 0.1))
    assert gap >= 0
    assert float(wl.sae_loss(sae, X, 0.1)) >= float(wl.solve_wide(X, 0.1).objective)


def test_checkpoint_resume_equals_uninterrupted(tmp_path, rng):
    X = rng.normal(size=(120, 5))
    kw = dict(
        key=jax.random.PRNGKey(2), progress=False, loss_tol=0, stop="loss", checkpoint_every=2
    )
    full = wl.fit_dictionary(X, 7, 0.3, max_epochs=6, **kw)
    part = wl.fit_dictionary(X, 7, 0.3, max_epochs=3, checkpoint_dir=str(tmp_path), **kw)
    assert int(part.n_epochs) == 3
    seen = []
    resumed = wl.fit_dictionary(
        X,
        7,
        0.3,
        max_epochs=6,
        checkpoint_dir=str(tmp_path),
        callback=lambda e, h: seen.append(e),
        **kw,
    )
    assert seen == [4, 5, 6]  # the first three epochs were not recomputed
    np.testing.assert_allclose(np.asarray(resumed.atoms), np.asarray(full.atoms), atol=1e-12)
    np.testing.assert_allclose(float(resumed.loss), float(full.loss), rtol=1e-12)
    with pytest.raises(ValueError, match="different problem"):
        wl.fit_dictionary(X, 8, 0.3, max_epochs=2, checkpoint_dir=str(tmp_path), **kw)
    # a state file of another layout (an older version, or damage) is refused and left as it is
    (state,) = tmp_path.glob("state-*.eqx")
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or was written by another version"):
        wl.fit_dictionary(X, 7, 0.3, max_epochs=8, checkpoint_dir=str(tmp_path), **kw)
    assert state.stat().st_size == 100


def test_minibatch_and_float32(rng):
    X = (rng.normal(size=(400, 6)) ** 3).astype(np.float32)
    fit = wl.fit_dictionary(
        X, 10, 0.3, key=jax.random.PRNGKey(0), batch_size=64, max_epochs=8, progress=False
    )
    assert fit.atoms.dtype == jnp.float32 and fit.codes.shape == (400, 10)
    h = fit.history.trimmed(int(fit.n_epochs))
    assert h["loss"][-1] < h["loss"][0]
    assert float(fit.loss) >= float(fit.wide_bound)


def test_sklearn_estimator(rng):
    from sklearn.base import clone

    X = rng.normal(size=(100, 4))
    est = wl.DictionaryLearner(5, alpha=0.3, max_epochs=10, random_state=0)
    assert est.fit(X) is est
    assert est.components_.shape == (5, 4) and est.n_iter_ >= 1 and est.n_features_in_ == 4
    Z = est.transform(X)
    assert Z.shape == (100, 5) and np.all(Z >= 0)
    np.testing.assert_allclose(Z, np.asarray(est.fit_.codes), atol=1e-3)  # fit codes: code_tol
    again = clone(est).fit(X)  # same random_state: the same fit
    np.testing.assert_allclose(again.components_, est.components_)
    loss = est.loss_
    est.partial_fit(X)  # more epochs from the current atoms never raise the loss
    assert est.loss_ <= loss * (1 + 1e-6) and est.n_iter_ > again.n_iter_
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        wl.DictionaryLearner(3, alpha=0.1).transform(X)


def test_sklearn_check_estimator_passes_what_minibatch_dictionary_learning_passes():
    """Every check of sklearn's suite that its own MiniBatchDictionaryLearning passes."""
    import warnings

    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.utils.estimator_checks import check_estimator

    def passed(est):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = check_estimator(est, on_fail=None, on_skip=None)
        return {r["check_name"] for r in res if r["status"] == "passed"}

    ref = passed(MiniBatchDictionaryLearning(n_components=3, max_iter=5, random_state=0))
    ours = passed(wl.DictionaryLearner(3, alpha=0.1, max_epochs=3, random_state=0))
    assert len(ref) >= 40 and ref <= ours, sorted(ref - ours)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(width=0), "`width` must be >= 1"),
        (dict(lam=0.0), "`lam`"),
        (dict(lam=-1.0), "`lam`"),
        (dict(X=np.full((5, 2), np.nan)), "`X` contains NaN"),
        (dict(X=np.ones(5)), "`X` must be 2-D"),
        (dict(init=np.ones((3, 4))), r"`init` must have shape"),
        (dict(init=np.zeros((2, 3))), "`init` has zero rows"),
        (dict(init=np.ones((0, 3))), "`init` has 0 rows"),
        (dict(batch_size=1000), "`batch_size`"),
        (dict(momentum=-0.1), "`momentum`"),
        (dict(momentum=np.nan), "`momentum`"),
        (dict(momentum="fast"), "`momentum`"),
    ],
)
def test_bad_inputs(kw, match, tmp_path):
    args = dict(X=np.random.default_rng(0).normal(size=(20, 3)), width=2, lam=0.1)
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=match):
        wl.fit_dictionary(
            args.pop("X"),
            args.pop("width"),
            args.pop("lam"),
            key=jax.random.PRNGKey(0),
            checkpoint_dir=str(tmp_path / "ck"),
            progress=False,
            **args,
        )
    assert not (tmp_path / "ck").exists()  # nothing written before the error


def test_working_set_codes_equal_dense_codes(rng):
    # K > 64 takes per-point working sets inside fit_dictionary; they must give the same codes,
    # including rows whose support outgrows the working set (dense fallback)
    from widelimit._finite.codes import gram_codes, kkt_residual

    n, d, k = 300, 20, 96
    D = unit(rng.normal(size=(k, d)))
    X = rng.normal(size=(n, d)) * 2
    X[:5] *= 20  # large rows: big supports
    lam = 0.3
    dense = gram_codes(D, np.zeros(d), X, lam, np.zeros((n, k)), 1e-8, 20000)
    support = (np.asarray(dense) > 0).sum(1)
    assert int(support.max()) > 16 and int((support >= 8).sum()) > 5  # every tier and the fallback
    for tiers in (8, (8,), (8, 16)):
        ws = gram_codes(D, np.zeros(d), X, lam, np.zeros((n, k)), 1e-8, 20000, ws=tiers)
        res = kkt_residual(ws, D @ D.T, X @ D.T, lam)
        assert float(res.max()) <= 1e-8 * lam * 1.01
        np.testing.assert_allclose(
            float(wl.dictionary_loss(X, D, ws, None, lam)),
            float(wl.dictionary_loss(X, D, dense, None, lam)),
            rtol=1e-10,
        )
    # the dense solve as a program of its own (what fit_dictionary compiles only when needed)
    from widelimit._finite.codes import dense_fallback, working_set_lasso

    args = (jnp.asarray(D), jnp.zeros(d), jnp.asarray(X), lam)
    part, needed = working_set_lasso(*args, jnp.zeros((n, k)), 1e-8, 20000, (8, 16), dense=False)
    assert bool(needed)  # the five large rows outgrow 16 atoms
    assert float(kkt_residual(part, D @ D.T, X @ D.T, lam).max()) > 1e-8 * lam
    whole = dense_fallback(*args, part, 1e-8, 20000)
    assert float(kkt_residual(whole, D @ D.T, X @ D.T, lam).max()) <= 1e-8 * lam * 1.01
    np.testing.assert_allclose(
        float(wl.dictionary_loss(X, D, whole, None, lam)),
        float(wl.dictionary_loss(X, D, dense, None, lam)),
        rtol=1e-10,
    )
    codes, needed = working_set_lasso(*args, jnp.asarray(whole), 1e-8, 20000, (8, 16), dense=False)
    assert not bool(needed)  # warm-started at the solution: nothing left for the dense solve
    np.testing.assert_array_equal(codes, whole)


def test_working_set_sizes_and_their_reuse():
    from widelimit._finite.codes import bucket_size, row_supports, working_set_size
    from widelimit._finite.epochs import _Config, _with_working_set

    assert [bucket_size(n) for n in (1, 16, 17, 25, 33, 49, 65, 97, 129)] == [
        16,
        16,
        24,
        32,
        48,
        64,
        96,
        128,
        192,
    ]
    Z = np.zeros((100, 2500))
    for i in range(100):
        Z[i, : 10 if i < 95 else 30] = 1.0  # q90 of the supports: 10, max 30
    s = row_supports(Z)
    assert s.tolist() == [10] * 95 + [30] * 5
    assert working_set_size(s, 2500) == (16, 48)
    assert working_set_size(s, 20) == (16, 20)  # capped at width
    cfg = _Config(1.0, True, None, 10, 1e-4, 500, True)
    first = _with_working_set(cfg, np.zeros(100, int), 4096, 0)
    assert first.ws == (16, 256) and first.support == 64  # before any codes
    kept = _with_working_set(first, s, 4096, 1)
    assert kept.ws == (16, 256)  # sparse codes keep the first epoch's tiers: no second compile
    grown = _with_working_set(first, np.full(100, 60), 4096, 1)
    assert grown.ws == (96, 256)  # every row fills 16: a new first tier; the last never shrinks
    assert kept.support == 64  # the support (q99.9 = 30 -> 32) is within a factor of two: kept
    again = _with_working_set(dataclasses.replace(cfg, ws=(24, 96), support=48), s, 4096, 1)
    assert again.ws == (24, 96) and again.support == 48  # within a factor of two: kept
    assert _with_working_set(cfg, np.zeros(100, int), 40, 3) is cfg  # K ≤ 64: dense codes
    assert _with_working_set(cfg, s, 500, 1).support is None  # K < 2048: dense code Gram
    # the sparse code Gram only where it is faster: 40·s ≤ K
    assert _with_working_set(cfg, np.zeros(100, int), 2500, 0).support is None  # 40·64 > 2500
    assert _with_working_set(first, np.full(100, 100), 4096, 1).support is None  # 40·128 > 4096
    assert _with_working_set(first, np.full(100, 100), 8192, 1).support == 128


def test_the_first_tier_grows_only_once_half_of_the_rows_fill_it():
    """Supports past the first tier's need (1.25·q90 + 2 = 151 -> 192 atoms) keep a 96-atom first
    tier while fewer than half of the rows reach 96 (they go on to the last tier): no second
    compile of the epoch; once half of them do, it grows."""
    from widelimit._finite.codes import working_set_size
    from widelimit._finite.epochs import _Config, _with_working_set

    cfg = _Config(1.0, True, None, 10, 1e-4, 500, True, ws=(96, 256))
    few = np.array([82] * 60 + [119] * 40)  # 40 rows fill the first tier
    assert working_set_size(few, 4096)[0] == 192  # what the first tier's need says
    assert _with_working_set(cfg, few, 4096, 5).ws == (96, 256)
    many = np.array([82] * 45 + [119] * 55)  # 55 rows fill it
    assert _with_working_set(cfg, many, 4096, 5).ws == (192, 256)
    shrunk = _with_working_set(cfg, np.full(100, 20), 4096, 5)
    assert shrunk.ws == (32, 256)  # more than twice the need (27 -> 32): it shrinks


def test_first_epoch_tiers_come_from_the_guessed_supports():
    from widelimit._finite.codes import first_tiers
    from widelimit._finite.epochs import _Config, _with_working_set

    s = np.array([10] * 95 + [30] * 5)  # q95 = 11: 1.25·11 + 2 -> 16
    assert first_tiers(2500, s) == (16, 256)  # the last tier at least 256
    assert first_tiers(2500, np.full(64, 36)) == (48, 256)
    assert first_tiers(2500, np.full(64, 300)) == (384,)  # one tier when the first holds the max
    assert first_tiers(100, np.full(64, 36)) == (48, 100)  # capped at the width
    assert first_tiers(2500, np.array([4] * 90 + [20] * 10)) == (32, 256)  # q95, not q90
    cfg = _Config(1.0, True, None, 10, 1e-4, 500, True)
    first = _with_working_set(cfg, np.zeros(100, int), 2500, 0, lambda: np.full(64, 36))
    assert first.ws == (48, 256)

    def unused():
        raise AssertionError("the guess is for a fit's first codes only")

    assert _with_working_set(first, np.full(100, 30), 2500, 1, unused).ws == (48, 256)
    assert _with_working_set(cfg, np.zeros(100, int), 40, 0, unused) is cfg  # K ≤ 64


def test_guessed_supports_are_those_of_the_exact_codes_of_a_row_sample():
    """``guess_supports`` (numpy, approximate) against the exact codes' supports of the same rows
    (``encode``, to tol 1e-6): at most a few rows differ, by an atom or two."""
    from widelimit._finite.support_guess import guess_supports, sample_rows

    for seed in range(2):
        data = wl.datasets.sparse_coded(
            jax.random.key(seed), 600, width=160, n_features=48, density=0.15
        )
        X = np.asarray(data.X)
        D = np.random.default_rng(seed).normal(size=(128, 48)).astype(np.float32)
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        b = X.mean(0)
        lam = 0.05 * float(np.median(np.linalg.norm(X - b, axis=1)))
        guess = guess_supports(D, b, X, lam)
        rows = sample_rows(len(X))
        assert len(rows) == len(guess) == 64
        exact = np.sum(np.asarray(wl.encode(D, b, X[rows], lam, tol=1e-6)) > 0, axis=1)
        assert exact.mean() > 20  # codes far from the default first tier of 16
        assert np.sum(guess != exact) <= 12 and np.abs(guess - exact).max() <= 3
        assert abs(guess.mean() - exact.mean()) <= 0.25
        for scale in (1e30, 1e-30):  # float64 data beyond float32's range: the same supports
            big = guess_supports(D, b * scale, X.astype(np.float64) * scale, lam * scale)
            np.testing.assert_array_equal(big, guess)
    w = np.zeros(600)
    w[100:200] = 1.0
    rows = sample_rows(600, w)
    assert rows.min() == 100 and rows.max() == 199 and len(rows) == 64  # weighted rows only
    assert sample_rows(10).tolist() == list(range(10))


def test_a_streamed_encode_sizes_its_working_sets_from_the_guessed_supports(monkeypatch):
    """``encode(..., sparse=True)`` solves its blocks on working sets sized from the guessed
    supports of its first block: 16 atoms for the sparse codes of real activations (not the 64
    of a cold ``solve_codes``), 48 or more for codes of ~30 atoms; its codes equal the in-memory
    encode's to the solve's tolerance."""
    import widelimit._finite.stream_encode as stream_encode

    seen = []
    solve = stream_encode._solve_codes

    def spy(*args, **kwargs):
        seen.append(args[7])  # the tiers
        return solve(*args, **kwargs)

    monkeypatch.setattr(stream_encode, "_solve_codes", spy)
    X = wl.datasets.activations(1000).X
    D = X[np.random.default_rng(0).choice(len(X), 128, replace=False)] - X.mean(0)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    lam = 0.25 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    codes = wl.encode(D, X.mean(0), X, lam, sparse=True, block_rows=512, progress=False)
    assert seen == [(16, 128)] * 2  # two blocks, one size (the last tier capped at K = 128)
    dense = np.asarray(wl.encode(D, X.mean(0), X, lam))
    np.testing.assert_allclose(np.asarray(codes.todense()), dense, atol=1e-3 * lam)
    data = wl.datasets.sparse_coded(jax.random.key(0), 500, width=160, n_features=48, density=0.15)
    Xs = np.asarray(data.X)
    D = np.random.default_rng(0).normal(size=(128, 48))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    lam = 0.05 * float(np.median(np.linalg.norm(Xs - Xs.mean(0), axis=1)))
    seen.clear()
    wl.encode(D, Xs.mean(0), Xs, lam, sparse=True, progress=False)
    assert seen and seen[0][0] >= 48


def test_a_streamed_fit_fixes_its_working_sets_from_the_guessed_supports(monkeypatch):
    """The streamed fit never re-sizes its working sets: they are fixed at its start from the
    guessed supports of its first codes, as a fit in memory starts (``first_tiers``): 16 atoms on
    these real activations, 48 on codes of ~30 atoms (the rule before, twice the largest guessed
    support, at most 64, gave 64: every row of codes past 64 atoms then went on to the last tier,
    2.9× slower on real activations at λ = 0.05 × the median distance, K = 2048)."""
    import widelimit._finite.stream_fit as stream_fit

    seen = []
    block = stream_fit._block

    def spy(cfg, *args, **kwargs):
        seen.append(cfg.ws)
        return block(cfg, *args, **kwargs)

    monkeypatch.setattr(stream_fit, "_block", spy)
    X = wl.datasets.activations(1000).X
    lam = 0.25 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    store = wl.ActivationStore(X)
    wl.fit_dictionary(
        store, 128, lam, key=jax.random.key(0), batch_size=500, max_epochs=1, progress=False
    )
    assert set(seen) == {(16, 128)}  # (the default: (64, 128))
    data = wl.datasets.sparse_coded(jax.random.key(0), 1000, width=160, n_features=48, density=0.15)
    Xs = np.asarray(data.X)
    lam = 0.05 * float(np.median(np.linalg.norm(Xs - Xs.mean(0), axis=1)))
    seen.clear()
    wl.fit_dictionary(
        wl.ActivationStore(Xs), 128, lam, key=jax.random.key(0), batch_size=500, max_epochs=1,
        progress=False,
    )  # fmt: skip
    assert set(seen) == {(48, 128)}


def test_a_fit_whose_first_codes_are_dense_compiles_its_epoch_once(monkeypatch, caplog):
    """The first epoch's working sets are sized from the guessed supports of its first codes, so
    that a fit on codes of ~30 atoms a row does not compile its epoch for the default first tier
    of 16 and then again for the 48 its first codes need. With the default tiers (monkeypatched
    below) the same fit compiles it twice: what the guess saves."""
    import logging

    import widelimit._finite.epochs as epochs

    data = wl.datasets.sparse_coded(jax.random.key(0), 500, width=160, n_features=48, density=0.15)
    X = np.asarray(data.X)
    lam = 0.05 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))

    def compiles(seeds=False):
        jax.clear_caches()
        with jax.log_compiles(), caplog.at_level(logging.WARNING):
            caplog.clear()
            if seeds:  # the vmapped one-program epoch of fit_dictionary_seeds
                keys = jax.random.split(jax.random.key(0), 2)
                fit = wl.fit_dictionary_seeds(X, 128, lam, keys=keys, max_epochs=3)[0]
            else:
                fit = wl.fit_dictionary(
                    X, 128, lam, key=jax.random.key(0), stop="loss", max_epochs=3, progress=False
                )
        names = [r.getMessage().split(" with ")[0] for r in caplog.records]
        return names.count(f"Compiling jit({'_epoch' if seeds else '_codes_accept'})"), fit

    n, fit = compiles()
    assert n == 1
    assert np.quantile(np.sum(np.asarray(fit.codes) > 0, axis=1), 0.9) > 16
    assert compiles(seeds=True)[0] == 1
    monkeypatch.setattr(epochs, "first_tiers", lambda k, guess: epochs.initial_tiers(k, 16))
    assert compiles()[0] == 2
    assert compiles(seeds=True)[0] == 2


def test_atom_update_solves_the_ball_problem_and_never_increases_f(rng):
    # The update minimises f(D) = ½ tr(D A Dᵀ) − <B, D> over ||d_k|| ≤ 1 (cvxpy reference), then
    # returns unit directions and scales n_k ≤ 1 with n ⊙ U the ball solution.
    import cvxpy as cp

    from widelimit._finite.atoms import atom_update

    k, d, n = 6, 5, 40
    Z = np.maximum(rng.normal(size=(n, k)), 0)
    Z[:, 5] = 0  # an unused atom keeps its direction
    X = rng.normal(size=(n, d))
    A, B = Z.T @ Z, Z.T @ X
    D0 = unit(rng.normal(size=(k, d)))
    U, scale = atom_update(jnp.asarray(D0), jnp.asarray(A), jnp.asarray(B), 3000)
    U, scale = np.asarray(U), np.asarray(scale)
    np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1, rtol=1e-12)
    assert np.all(scale <= 1 + 1e-12)
    np.testing.assert_allclose(U[5], D0[5])

    Dv = cp.Variable((k - 1, d))
    Au, Bu = A[:5, :5], B[:5]
    Lc = np.linalg.cholesky(Au + 1e-12 * np.eye(5))
    obj = 0.5 * cp.sum_squares(Lc.T @ Dv) - cp.sum(cp.multiply(Bu, Dv))
    cp.Problem(cp.Minimize(obj), [cp.norm(Dv[i], 2) <= 1 for i in range(k - 1)]).solve(
        solver=cp.CLARABEL
    )
    np.testing.assert_allclose(scale[:5, None] * U[:5], Dv.value, atol=1e-6)

    def f(D):
        return 0.5 * np.sum(D * (A @ D)) - np.sum(B * D)

    for steps in (1, 2, 5):  # every step count: never above the start
        U, scale = atom_update(jnp.asarray(D0), jnp.asarray(A), jnp.asarray(B), steps)
        assert f(np.asarray(scale)[:, None] * np.asarray(U)) <= f(D0) + 1e-12


def test_sparse_code_gram_equals_dense(rng):
    from widelimit._finite.atoms import code_gram, sparse_code_gram

    n, k = 400, 2048
    Z = (rng.random((n, k)) < 0.005) * rng.random((n, k))
    Z[:3, :40] = 1.0  # rows whose support exceeds the sparse budget
    w = rng.uniform(0, 2, n)
    dense = Z.T @ (w[:, None] * Z)
    np.testing.assert_allclose(code_gram(Z, w, 16), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sparse_code_gram(Z, w, 64), dense, rtol=1e-12, atol=1e-12)


def test_gram_lipschitz_is_the_largest_eigenvalue_of_the_gram(rng):
    from widelimit._finite.codes import gram_lipschitz

    for k, d in ((50, 8), (8, 50), (12, 12)):
        D = rng.normal(size=(k, d))
        top = np.linalg.eigvalsh(D @ D.T)[-1]
        np.testing.assert_allclose(float(gram_lipschitz(D)), top, rtol=1e-10)
        np.testing.assert_allclose(float(gram_lipschitz(D, D @ D.T)), top, rtol=1e-10)


def test_data_init_seeds_at_data_directions_then_lloyd_steps_raise_the_kmeans_objective(rng):
    from widelimit._finite.init import _lloyd_step, data_init

    X = jnp.asarray(rng.normal(size=(50, 5)) + 3.0)
    b = jnp.mean(X, axis=0)
    P = np.asarray(X - b)
    e = np.einsum("nd,nd->n", P, P)
    U = P / np.sqrt(e)[:, None]
    for width, max_rows in ((8, 16384), (8, 20), (70, 16384)):  # subsample; more atoms than rows
        D = np.asarray(data_init(X, b, width, jax.random.key(1), max_rows=max_rows, lloyd=0))
        assert D.shape == (width, 5) and D.dtype == np.asarray(X).dtype
        np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1, rtol=1e-6)
        assert (U @ D.T).max(0).min() > 0.999  # each seed is a data direction (up to 1e-3 noise)
        again = data_init(X, b, width, jax.random.key(1), max_rows=max_rows, lloyd=0)
        np.testing.assert_array_equal(D, np.asarray(again))
        other = data_init(X, b, width, jax.random.key(2), max_rows=max_rows, lloyd=0)
        assert not np.allclose(D, np.asarray(other))
    # k-means++ spreads the first atoms: 8 draws from 50 points never repeat a direction
    D0 = np.asarray(data_init(X, b, 8, jax.random.key(3), lloyd=0))
    assert np.sort(np.abs(D0 @ D0.T - np.eye(8)).ravel())[-1] < 0.999

    # a Lloyd step moves each atom to the normalised e-weighted sum of its nearest directions
    near = (U @ D0.T).argmax(1)
    D1 = _lloyd_step(U, e, D0)
    for k in range(8):
        c = (e[near == k, None] * U[near == k]).sum(0)
        want = c / np.linalg.norm(c) if np.any(near == k) else D0[k]
        np.testing.assert_allclose(D1[k], want, rtol=1e-6, atol=1e-9)
    # an atom no direction is nearest to is kept (directions in the positive orthant)
    lonely = np.vstack([np.abs(D0), -np.ones((1, 5)) / np.sqrt(5)])
    np.testing.assert_array_equal(_lloyd_step(np.abs(U), e, lonely)[-1], lonely[-1])

    # and it never lowers the objective Σ e_n max_k ⟨u_n, d_k⟩ (same seeds and noise otherwise)
    def objective(D):
        return float(np.sum(e * (U @ D.T).max(1)))

    fits = [np.asarray(data_init(X, b, 8, jax.random.key(3), lloyd=t)) for t in (0, 1, 2, 5)]
    values = [objective(D) for D in fits]
    assert np.all(np.diff(values) >= -1e-3), values
    assert values[-1] > values[0] * 1.01, values
    np.testing.assert_allclose(np.linalg.norm(fits[-1], axis=1), 1, rtol=1e-6)
    # more atoms than rows, and every row at the bias: finite unit atoms all the same
    for Xs, bs in ((X, b), (jnp.ones((6, 5)), jnp.ones(5))):
        D = np.asarray(data_init(Xs, bs, 70, jax.random.key(4)))
        assert np.isfinite(D).all()
        np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1, rtol=1e-6)


def test_dead_atoms_are_counted_and_resampled_from_the_worst_reconstructed_points():
    r = np.random.default_rng(3)
    d, k = 6, 8
    X = np.abs(r.normal(size=(300, d))) + 0.5  # positive data: an atom −1/√d is never used
    good = unit(np.abs(r.normal(size=(k - 2, d))))
    init = np.vstack([good, -np.ones((2, d)) / np.sqrt(d)])
    opts = dict(
        key=jax.random.PRNGKey(0),
        fit_bias=False,
        init=init,
        max_epochs=6,
        loss_tol=0,
        stop="loss",
        progress=False,
    )
    kept = wl.fit_dictionary(X, k, 0.5, resample_dead=False, **opts)
    h = kept.history.trimmed(6)
    assert h["dead"].tolist() == [2] * 6 and h["resampled"].tolist() == [0] * 6
    np.testing.assert_array_equal(
        np.asarray(kept.atoms)[-2:], init[-2:]
    )  # unused: left as they are
    assert not np.asarray(kept.codes)[:, -2:].any()

    fit = wl.fit_dictionary(X, k, 0.5, **opts)
    h = fit.history.trimmed(6)
    assert h["dead"][0] == 2 and h["resampled"][0] == 0  # the first epoch only encodes
    assert h["resampled"][1] == 2  # the next one replaces both, before its atom update
    D = np.asarray(fit.atoms)
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1, rtol=1e-6)
    assert (D[-2:] @ np.ones(d) > 0).all()  # now residual directions of the data, and used
    assert h["dead"][-1] == 0 and np.asarray(fit.codes)[:, -2:].any(axis=0).all()
    assert float(fit.loss) < float(kept.loss)
    # the replacements: the residual directions of the two worst-reconstructed points, in order
    from widelimit._finite.epochs import _replace_dead

    one = wl.fit_dictionary(X, k, 0.5, resample_dead=False, **{**opts, "max_epochs": 1})
    D1, Z1 = np.asarray(one.atoms), np.asarray(one.codes)
    R = X - Z1 @ D1
    worst = np.argsort(-np.linalg.norm(R, axis=1))[:2]
    dead = Z1.sum(0) <= 0
    counted = np.ones(len(X), bool)
    new, replaced = _replace_dead(D1, Z1, X, np.zeros(d), jax.random.PRNGKey(1), dead, counted)
    assert np.asarray(replaced).tolist() == dead.tolist()
    np.testing.assert_allclose(np.asarray(new)[-2:], unit(R[worst]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(new)[:-2], D1[:-2])


def test_staged_epochs_equal_the_one_program_epoch():
    """``fit_dictionary`` runs an epoch as separate programs (resampling only when needed, no
    update before the first codes, a lazily compiled dense fallback); ``fit_dictionary_seeds``
    vmaps the one-program epoch. Both must give the same states, working-set tiers included."""
    from widelimit._finite.codes import row_supports
    from widelimit._finite.epochs import _Config, _epoch, _staged_epoch, _with_working_set
    from widelimit._finite.epochs import initial_state as start

    r = np.random.default_rng(2)
    X = _planted(11, n=400)
    X[:, -1] = 1e-3 * r.normal(size=len(X))  # nothing in the last coordinate: ±e_d are never used
    X = jnp.asarray(X)
    n, d = X.shape
    k = 80  # > 64: per-point working sets
    D0 = r.normal(size=(k, d))
    D0[:, -1] = 0  # ... nor by atoms outside that coordinate
    D0[-2:] = 0
    D0[-2:, -1] = (1, -1)
    D0 = jnp.asarray(unit(D0))
    b0 = jnp.mean(X, axis=0)
    key = jax.random.PRNGKey(5)
    w = jnp.ones(n)
    cfg = _Config(jnp.asarray(0.1), True, None, 10, 1e-6, 500, True, 0.8)
    one = staged = start(D0, b0, n, 4)
    for e in range(4):
        cfg = _with_working_set(cfg, row_supports(staged.Z), k, e)
        cfg = dataclasses.replace(cfg, epoch_tol=jnp.asarray(1e-3 if e < 2 else 1e-6))
        one = _epoch(cfg, one, X, w, key, jnp.asarray(0.0))
        h = staged.history
        coded = e > 0 and float(h.l0[e - 1]) > 0
        dead = e > 0 and int(h.dead[e - 1]) > 0
        staged, supports = _staged_epoch(
            cfg, staged, X, w, key, jnp.asarray(0.0), coded=coded, dead=dead
        )
        np.testing.assert_array_equal(supports, row_supports(staged.Z))
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(staged), strict=True):
            if a is one.history.l0:  # a code of 1e-17 in one program can be 0 in the other
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2 / n)
            else:
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-9)
    assert int(staged.history.resampled[1]) > 0
    # working sets of 4 atoms: rows outgrow them, and the dense solve runs as its own program
    from widelimit._finite.epochs import _codes_accept, _update

    small = dataclasses.replace(cfg, ws=(4,))
    fresh = jnp.zeros(k, bool)
    update = _update(small, staged, X, w, fresh)
    outgrown = _codes_accept(small, staged, X, w, *update, fresh, 0.0, jnp.asarray(True))[-1]
    assert bool(outgrown)
    one = _epoch(small, staged, X, w, key, jnp.asarray(0.0))
    staged = _staged_epoch(small, staged, X, w, key, jnp.asarray(0.0), coded=True, dead=False)[0]
    np.testing.assert_allclose(one.Z, staged.Z, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(one.history.loss, staged.history.loss, rtol=1e-12)


def test_solve_codes_is_the_fitters_solver_with_a_status(rng):
    """K > 64: the working-set solver (issue 19's one code solver) against sklearn's Lasso, its
    status, and the default tolerance's loss against a tight solve."""
    d, k, lam = 12, 96, 0.15
    D = unit(rng.normal(size=(k, d)))
    b = rng.normal(size=d)
    X = b + np.abs(rng.normal(size=(40, k))) * (rng.random((40, k)) < 0.05) @ D
    X = X + 0.05 * rng.normal(size=X.shape)
    tight = wl.solve_codes(D, b, X, lam, tol=1e-10, max_steps=100000)
    assert code_tiers(k, None) is not None  # this width goes through the working sets
    assert tight.result == wl.RESULTS.successful and float(tight.kkt) <= 1e-10
    for n in range(0, X.shape[0], 7):
        ref = Lasso(alpha=lam / d, positive=True, fit_intercept=False, tol=1e-14, max_iter=100000)
        ref.fit(D.T, X[n] - b)
        np.testing.assert_allclose(tight.codes[n], ref.coef_, atol=1e-6)
    default = wl.solve_codes(D, b, X, lam)
    assert default.result == wl.RESULTS.successful and float(default.kkt) <= 1e-4
    L = lambda Z: float(wl.dictionary_loss(X, D, Z, b, lam))  # noqa: E731
    assert abs(L(default.codes) - L(tight.codes)) <= 1e-6 * L(tight.codes)
    np.testing.assert_array_equal(wl.encode(D, b, X, lam), default.codes)
    short = wl.solve_codes(D, b, X, lam, tol=1e-12, max_steps=1)
    assert short.result == wl.RESULTS.max_steps_reached and float(short.kkt) > 1e-12
    with pytest.raises(RuntimeError, match="KKT residual"):
        wl.encode(D, b, X, lam, tol=1e-12, max_steps=1, throw=True)
    # codes short of tol are never returned silently: in memory as from a stream, a warning
    # names the residual (this was silent in memory)
    for sparse in (False, True):
        with pytest.warns(UserWarning, match=r"KKT residual of .*·λ > tol = 1e-12"):
            wl.encode(D, b, X, lam, tol=1e-12, max_steps=1, sparse=sparse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wl.encode(D, b, X, lam)
    with pytest.raises(ValueError, match="tol"):
        wl.solve_codes(D, b, X, lam, tol=0.0)
    jitted = jax.jit(lambda X: wl.solve_codes(D, b, X, lam, throw=True))(X)
    np.testing.assert_allclose(jitted.codes, default.codes, atol=1e-9)


def test_amortisation_gap_reports_its_code_solve(rng):
    X = (np.abs(rng.normal(size=(300, 3, 1))) * unit(rng.normal(size=(3, 8)))[None]).sum(1) + 0.5
    sae = wl.train_sae(X, 80, 0.1, key=jax.random.PRNGKey(0), steps=200, batch_size=64).sae
    g = wl.amortisation_gap(sae, X, 0.1)
    assert isinstance(g, wl.AmortisationGap) and g.result == wl.RESULTS.successful
    assert float(g.code_kkt) <= 1e-4 and float(g) == float(g.gap) >= 0
    np.testing.assert_allclose(g.sae_loss, wl.sae_loss(sae, X, 0.1), rtol=1e-10)
    # an independent reference: scikit-learn's coordinate-descent lasso on the same decoder
    from sklearn.decomposition import sparse_encode

    D, _, b = sae.as_dictionary(X)
    Z = sparse_encode(np.asarray(X - b), np.asarray(D), algorithm="lasso_cd", alpha=0.1,
                      positive=True, max_iter=20000)  # fmt: skip
    ref = wl.dictionary_loss(X, D, Z, b, 0.1)
    np.testing.assert_allclose(g.exact_loss, ref, rtol=1e-6)
    # a gap from codes that max_steps left short of tol is not a bound: it warns
    with pytest.warns(UserWarning, match=r"amortisation_gap: the codes reached a KKT residual"):
        short = wl.amortisation_gap(sae, X, 0.1, tol=1e-12, max_steps=1)
    assert short.result == wl.RESULTS.max_steps_reached


def test_accept_takes_the_trial_point_when_the_plain_update_is_left_out():
    """``_accept`` keeps the better of the plain update (D', Z) and the extrapolated (D_e, Z_e);
    with ``plain`` false (the polish's trial points, which run the epochs' program) it takes
    (D_e, Z_e) even when the plain update has the lower loss, and records that loss; by default it
    compares."""
    import equinox as eqx

    from widelimit._finite.epochs import _accept, _Config
    from widelimit._finite.epochs import initial_state as start

    r = np.random.default_rng(0)
    n, d, k = 50, 5, 4
    X = jnp.asarray(r.normal(size=(n, d)))
    D = jnp.asarray(unit(r.normal(size=(k, d))))
    De = jnp.asarray(unit(r.normal(size=(k, d))))
    b, w = jnp.zeros(d), jnp.ones(n)
    lam = 0.1
    Z = wl.encode(D, b, X, lam, tol=1e-8)  # exact for D: the plain update is the better one
    Ze = jnp.abs(jnp.asarray(r.normal(size=(n, k))))  # poor codes for D_e
    s = eqx.tree_at(lambda t: t.Z, start(D, b, n, 2), Z)
    cfg = _Config(jnp.asarray(lam), True, None, 10, 1e-6, 500, True)
    fresh = jnp.zeros(k, bool)
    L_plain = float(wl.dictionary_loss(X, D, Z, b, lam))
    L_e = float(wl.dictionary_loss(X, De, Ze, b, lam))
    assert L_plain < L_e
    for plain, (want_D, want_Z, want_L) in ((None, (D, Z, L_plain)), (True, (D, Z, L_plain)),
                                            (False, (De, Ze, L_e))):  # fmt: skip
        flag = () if plain is None else (jnp.asarray(plain),)  # None: the default
        new, loss, _ = _accept(cfg, s, X, w, D, Z, b, De, Ze, fresh, 0.0, *flag)
        np.testing.assert_allclose(new.D, want_D)
        np.testing.assert_allclose(new.Z, want_Z)
        np.testing.assert_allclose(float(loss), want_L, rtol=1e-10)
