import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cvxpy_wide, huber_location_1d, weiszfeld, wide_problems

import widelimit as wl

PROBLEMS = wide_problems()


@pytest.mark.parametrize("name,X,w,bias,nonneg,lam", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_matches_cvxpy(name, X, w, bias, nonneg, lam):
    ref_val, ref_b, ref_M = cvxpy_wide(X, lam, w, bias, nonneg)
    # b is ill-conditioned where most points are far (curvature λ/r): b to 1e-5 needs a 1e-13 gap
    sol = wl.solve_wide(X, lam, weights=w, fit_bias=bias, nonneg_atoms=nonneg, rtol=1e-13)
    assert sol.bias.dtype == jnp.float64
    np.testing.assert_allclose(float(sol.objective), ref_val, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sol.bias), ref_b, atol=1e-5)
    # the dual bound really is below the optimum, and the gap certifies it
    assert float(sol.dual_objective) <= ref_val * (1 + 1e-9) + 1e-12
    assert 0 <= float(sol.gap) <= 1e-13
    # per-point atoms and codes reproduce the reference reconstruction
    if w is None:
        np.testing.assert_allclose(np.asarray(sol.reconstruction(X) - sol.bias), ref_M, atol=1e-4)


def test_float32_reaches_default_tolerance():
    X = np.random.default_rng(1).normal(size=(2000, 16)).astype(np.float32)
    sol = wl.solve_wide(X, 2.0)
    assert sol.bias.dtype == jnp.float32
    assert float(sol.gap) <= 1e-6
    ref = wl.solve_wide(X.astype(np.float64), 2.0)
    np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sol.bias), np.asarray(ref.bias), atol=1e-4)


def test_large_lambda_gives_mean(rng):
    X = rng.normal(size=(100, 3)) * 2 + 1
    w = rng.uniform(0.1, 2, size=100)
    sol = wl.solve_wide(X, 1e6, weights=w)
    np.testing.assert_allclose(np.asarray(sol.bias), (w[:, None] * X).sum(0) / w.sum(), atol=1e-10)
    assert not np.any(np.asarray(sol.encoded))


def test_small_lambda_gives_geometric_median(rng):
    X = rng.normal(size=(60, 3)) ** 3
    sol = wl.solve_wide(X, 1e-7, rtol=1e-9, max_steps=20000)
    np.testing.assert_allclose(np.asarray(sol.bias), weiszfeld(X), atol=1e-6)


def test_one_d_huber_location(rng):
    x = rng.standard_t(2, size=200)
    sol = wl.solve_wide(x[:, None], 0.3, rtol=1e-14)
    np.testing.assert_allclose(float(sol.bias[0]), huber_location_1d(x, 0.3), atol=1e-6)


def test_wide_certificate_at_optimum(rng):
    X = rng.normal(size=(80, 5))
    sol = wl.solve_wide(X, 0.7)
    r = np.linalg.norm(np.asarray(sol.residuals(X)), axis=1)
    assert r.max() <= 0.7 * (1 + 1e-8)
    np.testing.assert_allclose(np.asarray(sol.residuals(X)).sum(0), 0, atol=1e-8)
    atoms = np.asarray(sol.atoms(X))
    enc = np.asarray(sol.encoded)
    np.testing.assert_allclose(np.linalg.norm(atoms[enc], axis=1), 1, rtol=1e-12)
    assert np.all(atoms[~enc] == 0)


def test_degenerate_data():
    # identical points, a single point, a point exactly at the bias
    same = np.ones((10, 3))
    s = wl.solve_wide(same, 0.1)
    np.testing.assert_allclose(np.asarray(s.bias), 1.0)
    assert float(s.objective) == 0 and float(s.gap) == 0
    one = np.array([[1.0, 2.0]])
    s = wl.solve_wide(one, 0.5)
    np.testing.assert_allclose(np.asarray(s.bias), one[0])
    sym = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    s = wl.solve_wide(sym, 0.5)
    np.testing.assert_allclose(np.asarray(s.bias), 0, atol=1e-12)
    assert np.isfinite(float(s.objective))
    dup = np.concatenate([np.eye(3)] * 5)
    s1, s2 = wl.solve_wide(dup, 0.4), wl.solve_wide(np.eye(3), 0.4)
    np.testing.assert_allclose(float(s1.objective), float(s2.objective), rtol=1e-9)


@pytest.mark.parametrize("scale", [1e-12, 1e12])
def test_huge_and_tiny_scales(scale, rng):
    X = rng.normal(size=(50, 4))
    ref = wl.solve_wide(X, 0.5)
    for dt in (np.float64, np.float32):
        s = wl.solve_wide((X * scale).astype(dt), 0.5 * scale)
        np.testing.assert_allclose(float(s.objective) / scale**2, float(ref.objective), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(s.bias) / scale, np.asarray(ref.bias), atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jit_and_vmap(dtype, rng):
    X = jnp.asarray(rng.normal(size=(64, 3)), dtype)
    lams = jnp.asarray([0.3, 0.6, 1.2], dtype)
    f = jax.jit(lambda X, lam: wl.solve_wide(X, lam).objective)
    eager = [float(wl.solve_wide(X, float(lam)).objective) for lam in lams]
    np.testing.assert_allclose([float(f(X, lam)) for lam in lams], eager, rtol=1e-5)
    v = jax.vmap(lambda lam: wl.solve_wide(X, lam))(lams)
    assert v.objective.dtype == dtype and v.bias.shape == (3, 3)
    np.testing.assert_allclose(np.asarray(v.objective), eager, rtol=1e-5)


@pytest.mark.parametrize("method", ["scan", "vmap"])
def test_path_matches_single_solves(method, rng):
    X = rng.normal(size=(120, 4)) + 2
    lams = np.array([0.2, 1.5, 0.05, 0.8])
    path = wl.solve_wide_path(X, lams, method=method, rtol=1e-13)
    for i, lam in enumerate(lams):
        s = wl.solve_wide(X, lam, rtol=1e-13)
        np.testing.assert_allclose(float(path.objective[i]), float(s.objective), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(path.bias[i]), np.asarray(s.bias), atol=1e-6)
    # W(λ) is increasing in λ
    vals = np.asarray(path.objective)[np.argsort(lams)]
    assert np.all(np.diff(vals) > 0)


def test_nonconvergence_raises_or_reports(rng):
    X = rng.normal(size=(200, 4)) ** 3
    with pytest.raises(RuntimeError, match="max_steps"):
        wl.solve_wide(X, 0.01, max_steps=1, rtol=1e-12)
    sol = wl.solve_wide(X, 0.01, max_steps=1, rtol=1e-12, throw=False)
    assert sol.result == wl.RESULTS.max_steps_reached
    assert float(sol.gap) > 1e-12


def test_chunked_pass_matches_plain(rng):
    # large enough that the in-memory pass runs in cache-sized blocks with a remainder
    X = rng.normal(size=(70001, 64)).astype(np.float32) + 1
    sol = wl.solve_wide(X, 6.0)
    ref = wl.solve_wide(X.astype(np.float64), 6.0)
    np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(sol.bias), np.asarray(ref.bias), atol=1e-4)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
def test_group_pass_equals_one_pass_per_bias(dtype, rtol, rng, monkeypatch):
    # one centring serves biases within λ/4 of the reference; farther ones get their own pass
    import widelimit._wide.data_pass as wide_pass
    from widelimit._wide.data_pass import data_pass
    from widelimit._wide.path import group_stats

    monkeypatch.setattr(wide_pass, "_BLOCK_ELEMENTS", 2**10)  # 170-row blocks and a remainder
    X = jnp.asarray(rng.normal(size=(3001, 6)) * 3 + 50, dtype)  # far from the origin
    lams = jnp.asarray([2.0, 1.5, 1.0, 0.7], dtype)
    for spread in (0.1, 3.0):  # near: the shared pass; far: exact passes (the fallback)
        B = jnp.asarray(50 + spread * rng.normal(size=(4, 6)) / np.sqrt(6) * 0.4, dtype)
        got = group_stats(X, jnp.ones(3001, dtype), B, lams, False)
        for j in range(4):
            ref = data_pass(
                X.astype(np.float64),
                jnp.ones(3001),
                B[j].astype(np.float64),
                lams[j].astype(np.float64),
                False,
                True,
            )
            np.testing.assert_allclose(
                np.asarray(got[1][j]), np.asarray(ref[1]), rtol=rtol, atol=rtol
            )
            for k in (2, 3):  # G and Y, relative to their scale Σ|y|/λ
                scale = float(jnp.sum(jnp.abs(X - B[j]))) / float(lams[j])
                np.testing.assert_allclose(
                    np.asarray(got[k][j]), np.asarray(ref[k]), atol=rtol * scale
                )


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
def test_known_distance_pass_equals_direct_passes(dtype, rtol, rng, monkeypatch):
    # a group started at the last bias of the one before reuses that pass's distances
    import widelimit._wide.data_pass as wide_pass
    from widelimit._wide.data_pass import data_pass
    from widelimit._wide.path import known_distance_stats

    monkeypatch.setattr(wide_pass, "_BLOCK_ELEMENTS", 2**10)  # 170-row blocks and a remainder
    X = jnp.asarray(rng.normal(size=(3001, 6)) * 3 + 50, dtype)
    w = jnp.asarray(rng.uniform(0.5, 1.5, 3001), dtype)
    b = jnp.asarray(50 + rng.normal(size=6), dtype)
    lam0, lams = 1.3, jnp.asarray([2.0, 1.5, 1.0, 0.7], dtype)
    q0 = data_pass(X, w, b, jnp.asarray(lam0, dtype), False, True)[1]
    got = known_distance_stats(X, w, b, q0, lam0, lams)
    for j in range(4):
        X64, w64, b64 = (np.asarray(a, np.float64) for a in (X, w, b))
        ref = data_pass(X64, w64, b64, float(lams[j]), False, True)
        np.testing.assert_allclose(np.asarray(got[1][j]), np.asarray(ref[1]), rtol=rtol)
        for k in (2, 3):
            scale = float(np.sum(np.abs(X64 - b64))) / float(lams[j])
            np.testing.assert_allclose(np.asarray(got[k][j]), np.asarray(ref[k]), atol=rtol * scale)


def test_long_path_shares_passes_and_matches_single_solves(rng):
    X = rng.standard_t(3, size=(400, 5)) + 3
    lams = np.geomspace(0.05, 3.0, 21)  # 21 λ: three groups, the last padded
    path = wl.solve_wide_path(X, lams, rtol=1e-13)
    jitted = jax.jit(lambda lams: wl.solve_wide_path(X, lams, rtol=1e-13).objective)(lams)
    for i in (0, 7, 13, 20):
        s = wl.solve_wide(X, lams[i], rtol=1e-13)
        np.testing.assert_allclose(float(path.objective[i]), float(s.objective), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(path.bias[i]), np.asarray(s.bias), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(path.objective), rtol=1e-12)
    assert np.all(np.asarray(path.gap) <= 1e-13) and path.code_norms.shape == (21, 400)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slack_weights_equal_the_direct_sums(dtype, rng):
    # the O(N) histogram from logarithms is exact at and next to every level, for the fixed ladder
    # and for ladders fitted to G (from τ = ||G||/Σw to ½); so are the direct comparisons that
    # ``point_sums`` uses for the short fitted ladders
    from widelimit._wide.certificate import (
        direct_slack_weights,
        fixed_levels,
        point_sums,
        slack_levels,
        slack_weights,
    )

    ladders = [np.asarray(fixed_levels(dtype))]
    for tau in (1e-5, 1e-3, 0.7):
        ladders.append(np.asarray(slack_levels(jnp.asarray([tau * 10.0], dtype), 10.0)))
    for t in ladders:
        edges = (1 - t).astype(dtype)
        q = np.concatenate([
            rng.uniform(0, 2, 500), rng.uniform(0.999, 1.0, 200), edges,
            np.nextafter(edges, 2 * np.ones_like(edges)), np.nextafter(edges, np.zeros_like(edges)),
            [0.0, 1.0, np.nextafter(dtype(1), dtype(0))],
        ]).astype(dtype)  # fmt: skip
        w = rng.uniform(0, 2, q.shape).astype(dtype)
        w[::7] = 0
        direct = np.sum(np.where((q[None] <= 1 - t[:, None]) & (w[None] > 0), w[None], 0), axis=1)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        qj, wj, tj = jnp.asarray(q), jnp.asarray(w), jnp.asarray(t)
        np.testing.assert_allclose(np.asarray(slack_weights(qj, wj, tj)), direct, rtol=tol)
        np.testing.assert_allclose(np.asarray(direct_slack_weights(qj, wj, tj)), direct, rtol=tol)
        sums = point_sums(jnp.zeros_like(qj), qj, wj, tj)
        np.testing.assert_allclose(np.asarray(sums.slack_w), direct, rtol=tol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("n", [4000, 3001])  # 250-row batched sums; no divisor in range: c @ X
def test_fast_pass_equals_direct_pass(dtype, rtol, n, rng):
    # the in-memory solver's pass: squared distances, then sums of the raw rows (not of x − b)
    from widelimit._wide.data_pass import data_pass, fast_pass, sum_rows_batch, weighted_row_sum

    assert (sum_rows_batch(n) is None) == (n == 3001)
    X = jnp.asarray(rng.normal(size=(n, 6)) * 3 + 5, dtype)
    w = jnp.asarray(rng.uniform(0, 2, n), dtype)
    b = jnp.asarray(5 + rng.normal(size=6), dtype)
    wx = weighted_row_sum(w, X)
    np.testing.assert_allclose(np.asarray(wx), np.asarray(w @ X), rtol=rtol)
    got = jax.jit(fast_pass)(X, w, b, jnp.asarray(4.0, dtype), wx)
    X64, w64, b64 = (np.asarray(a, np.float64) for a in (X, w, b))
    ref = data_pass(X64, w64, b64, 4.0, False, True)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(ref[1]), rtol=rtol)
    scale = float(np.sum(w64[:, None] * np.abs(X64 - b64))) / 4.0
    for k in (2, 3):
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), atol=rtol * scale)


def test_fast_pass_falls_back_far_from_the_origin(rng):
    # raw-row sums at ||b|| = 1e5 × the spread would lose G to float32 rounding; the pass then
    # forms x − b itself (with the fallback off, G is off by ~1e-3 of its scale)
    from widelimit._wide.data_pass import data_pass, fast_pass, weighted_row_sum

    X = jnp.asarray(rng.normal(size=(4000, 6)) + 1e5, jnp.float32)
    w = jnp.ones(4000, jnp.float32)
    b = jnp.asarray(np.asarray(X, np.float64).mean(0) + 0.1, jnp.float32)
    got = fast_pass(X, w, b, jnp.float32(1.0), weighted_row_sum(w, X))
    ref = data_pass(
        np.asarray(X, np.float64), np.ones(4000), np.asarray(b, np.float64), 1.0, False, True
    )
    scale = float(np.sum(np.abs(np.asarray(X, np.float64) - np.asarray(b, np.float64))))
    np.testing.assert_allclose(np.asarray(got[2]), np.asarray(ref[2]), atol=1e-5 * scale)
