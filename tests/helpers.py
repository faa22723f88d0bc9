"""Problems with known answers and independent reference solvers (cvxpy + Clarabel, Weiszfeld)."""

import os

import cvxpy as cp
import numpy as np


def subprocess_xla_flags(devices: int | None = None) -> str:
    """``XLA_FLAGS`` for a test's subprocess: this run's own (``conftest``: backend optimisation
    level 0, so that its compiles are as cheap as the tests'), with ``devices`` forced host devices
    (one device when None)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def wide_problems():
    """(name, X, weights, bias, nonneg, lam) covering the cases of issue 2."""
    r = np.random.default_rng(42)
    out = []
    X = r.normal(size=(40, 4))
    out.append(("random", X, None, True, False, 0.8))
    A = r.normal(size=(50, 3)) * np.array([5.0, 1.0, 0.1]) + np.array([3.0, -2.0, 1.0])
    out.append(("anisotropic", A, None, True, False, 0.7))
    C = np.concatenate(
        [r.normal(size=(15, 4)) * 0.2 + c for c in ([3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0])]
    )
    out.append(("clustered", C, None, True, False, 0.5))
    W = r.uniform(0, 3, size=40)
    W[:5] = 0.0
    out.append(("weighted", X, W, True, False, 0.6))
    out.append(("no_bias", X + 0.5, None, False, False, 0.9))
    out.append(("nonneg_atoms", X + 0.3, None, True, True, 0.4))
    out.append(
        ("nonneg_weighted", A / 3, W[:50] if len(W) >= 50 else r.uniform(0, 2, 50), True, True, 0.3)
    )
    out.append(("one_d", r.standard_t(3, size=(30, 1)), None, True, False, 0.5))
    return out


def cvxpy_wide(X, lam, weights=None, bias=True, nonneg=False):
    """Reference solution of the convex group lasso with intercept (Clarabel)."""
    n, d = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float) * n / np.sum(weights)
    M = cp.Variable((n, d), nonneg=nonneg)
    b = cp.Variable(d) if bias else np.zeros(d)
    R = X - M - (cp.reshape(b, (1, d), order="C") if bias else 0)
    obj = 0.5 / n * cp.sum(cp.multiply(w, cp.sum(cp.square(R), axis=1))) + lam / n * cp.sum(
        cp.multiply(w, cp.norm(M, 2, axis=1))
    )
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return prob.value, (b.value if bias else b), M.value


def weiszfeld(X, iters=20000, tol=1e-15):
    """Independent geometric median (Weiszfeld with the Vardi–Zhang guard against data points)."""
    y = X.mean(0)
    for _ in range(iters):
        d = np.linalg.norm(X - y, axis=1)
        nz = d > 1e-14
        wts = 1 / d[nz]
        T = (wts[:, None] * X[nz]).sum(0) / wts.sum()
        eta = np.sum(~nz)
        if eta:
            R = ((X[nz] - y) * wts[:, None]).sum(0)
            rn = np.linalg.norm(R)
            T = max(0, 1 - eta / rn) * T + min(1, eta / rn) * y if rn > 0 else y
        if np.linalg.norm(T - y) < tol:
            return T
        y = T
    return y


def huber_location_1d(x, lam, iters=200):
    """1-D Huber location by bisection on Σ ψ(x − b) = 0 (monotone in b)."""
    lo, hi = x.min(), x.max()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        s = np.sum(np.clip(x - mid, -lam, lam))
        lo, hi = (mid, hi) if s > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def hull_bounds_brute(Z, weights=None):
    """lo_ij, hi_ij = min, max of z_j over {n : z_i(n) = 0, w_n > 0} by brute force (±inf if empty)."""
    Z = np.asarray(Z, np.float64)
    keep = np.ones(len(Z), bool) if weights is None else np.asarray(weights) > 0
    k = Z.shape[1]
    lo, hi = np.full((k, k), np.inf), np.full((k, k), -np.inf)
    for i in range(k):
        off = (Z[:, i] <= 0) & keep
        if off.any():
            lo[i], hi[i] = Z[off].min(0), Z[off].max(0)
    return lo, hi
