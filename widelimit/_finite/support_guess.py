"""A guess of the support sizes of a fit's first codes, in numpy on the host, before anything is
compiled: the first epoch's working sets are sized from it, so that a fit whose codes are not
sparse (say 30 atoms a row) does not compile its epoch twice, once for the default size and again
when the first codes show the size it needs."""

from __future__ import annotations

import jax
import numpy as np


def _host_rows(X, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of X as numpy: a view of a concrete CPU array, else one device gather."""
    if isinstance(X, np.ndarray):
        return X[idx]
    if X.is_fully_addressable and all(d.platform == "cpu" for d in X.devices()):
        return np.asarray(X)[idx]
    return np.asarray(jax.device_get(X[idx]))


def sample_rows(n: int, w=None, rows: int = 64) -> np.ndarray:
    """Indices of ``rows`` evenly spaced rows among the n (those of positive weight ``w``)."""
    keep = np.arange(n) if w is None else np.flatnonzero(np.asarray(w) > 0)
    pick = np.linspace(0, len(keep) - 1, min(len(keep), rows)).round().astype(np.int64)
    return keep[np.unique(pick)]


def guess_supports(
    D, b, X, lam: float, w=None, *, rows: int = 64, size: int = 64, rounds: int = 4,
    steps: int = 100,
) -> np.ndarray:  # fmt: skip
    """Support sizes #{k: z_k > 0} of approximate codes z = argmin_{z≥0} ½||x − b − Dᵀz||² + λ||z||₁
    of ``rows`` evenly spaced rows of X (of positive weight ``w``), by per-row working sets of
    ``size`` atoms: the largest correlations d_k·(x − b) first, then the support and the most
    violated conditions d_k·r > λ, each solved by ``steps`` FISTA steps, for at most ``rounds``
    rounds. A sizing heuristic in float32 (O(rounds·rows·K·d) flops on the host: 13–54 ms for
    K = 256–4096, d = 384), not a solver: the fit's codes are exact whatever it returns."""
    Xs = _host_rows(X, sample_rows(X.shape[0], w, rows)).astype(np.float64) - np.asarray(b)
    # the supports are those of (x − b)/s at λ/s: any scale s, here one that float32 holds
    scale = float(np.max(np.abs(Xs), initial=0.0)) or 1.0
    Xs, lam = (Xs / scale).astype(np.float32), lam / scale
    D = np.asarray(D, np.float32)
    m, k = Xs.shape[0], D.shape[0]
    size = min(size, k)
    at = np.arange(m)[:, None]
    g = Xs @ D.T  # d_k·(x − b): the conditions' violation at z = 0, less λ
    z = np.zeros((m, size), np.float32)
    for _ in range(rounds):
        # the support (g = +inf) and then the largest g, in no order
        ws = np.argpartition(-g, size - 1, axis=1)[:, :size] if size < k else np.argsort(-g, 1)
        Dw = D[ws]  # m × size × d
        G = Dw @ Dw.transpose(0, 2, 1)
        c = (Dw @ Xs[:, :, None])[..., 0]
        step = 1 / np.maximum(np.abs(G).sum(2).max(1, keepdims=True), 1e-30)  # 1/L, L ≥ λ_max
        z = y = np.zeros((m, size), np.float32)
        t = 1.0
        for _ in range(steps):
            zn = np.maximum(y - step * ((G @ y[:, :, None])[..., 0] - c + lam), 0)
            tn = (1 + np.sqrt(1 + 4 * t * t)) / 2
            y, z, t = zn + (t - 1) / tn * (zn - z), zn, tn
        g = (Xs - (z[:, None, :] @ Dw)[:, 0]) @ D.T
        g[at, ws] = np.where(z > 0, np.inf, -np.inf)  # keep the support, drop its zeros
        if size == k or not (g[np.isfinite(g)] > lam).any():
            break
    return np.sum(z > 0, axis=1)


def supports_guess(D, b, X, lam, w=None):
    """``guess_supports`` of (D, b, X, λ) as a function to call only when the guess is needed,
    or None inside a trace (a traced argument has no values to guess from)."""
    if any(isinstance(a, jax.core.Tracer) for a in (D, b, X, lam, w)):
        return None
    return lambda: guess_supports(D, b, X, float(lam), w)
