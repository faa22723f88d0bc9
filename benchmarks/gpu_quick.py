"""A short accelerator check (run by hand on a lent GPU): the λ path against one solve, the
K = 1024 fit's time to scikit-learn's objective (``results/finite_scaling.json``) in this fresh
process and again with its programs compiled, and the time per epoch at K = 1024 and 4096.
Prints one dict per measurement."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, sparse_coded, timeit  # noqa: E402
from wide_scaling import pick_lam  # noqa: E402

import widelimit as wl  # noqa: E402


def fit(X, k, lam, epochs):
    key = jax.random.key(0)
    t0, times, losses = time.perf_counter(), [], []

    def cb(e, h):
        times.append(time.perf_counter() - t0)
        losses.append(float(h["loss"][-1]))

    wl.fit_dictionary(
        X, k, lam, key=key, max_epochs=epochs, loss_tol=0, stop="loss", progress=False, callback=cb
    )
    return np.asarray(times), np.asarray(losses)


def main():
    backend = jax.default_backend()
    ref = json.load(open(os.path.join(RESULTS, "finite_scaling.json")))["vs_sklearn_at_k"]
    Xf = sparse_coded(8000, 384, seed=3)
    lam = 0.1 * float(np.median(np.linalg.norm(Xf - Xf.mean(0), axis=1)))
    for run in ("fresh_process", "compiled"):
        times, losses = fit(Xf, 1024, lam, 8)
        hit = np.flatnonzero(losses <= ref["sklearn"]["loss"])
        t_hit = float(times[hit[0]]) if len(hit) else None
        print({"k": 1024, "run": run, "backend": backend, "time_to_sklearn_loss": t_hit,
               "sklearn_cpu_s": ref["sklearn"]["seconds"], "epoch_s": np.diff(np.r_[0, times]).round(3).tolist(),
               "loss": losses.round(3).tolist()}, flush=True)  # fmt: skip
    times, _ = fit(Xf, 4096, lam, 8)
    print(
        {"k": 4096, "backend": backend, "epoch_s": np.diff(np.r_[0, times]).round(3).tolist()},
        flush=True,
    )
    X = jnp.asarray(sparse_coded(20000, 384, seed=4))
    lam = pick_lam(X)
    lams = jnp.asarray(np.geomspace(lam / 20, lam * 4, 64), X.dtype)
    one = timeit(lambda: wl.solve_wide(X, lam).objective, repeat=10)
    path = timeit(lambda: wl.solve_wide_path(X, lams).objective, repeat=3)
    print(
        {"one_solve_s": one, "path_64_s": path, "ratio": path / one, "backend": backend}, flush=True
    )


if __name__ == "__main__":
    main()
