"""A short accelerator check of the λ path and the width-4096 epoch (run by hand on a lent GPU)."""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import sparse_coded, timeit  # noqa: E402
from wide_scaling import pick_lam  # noqa: E402

import widelimit as wl  # noqa: E402

X = jnp.asarray(sparse_coded(20000, 384, seed=4))
lam = pick_lam(X)
lams = jnp.asarray(np.geomspace(lam / 20, lam * 4, 64), X.dtype)
one = timeit(lambda: wl.solve_wide(X, lam).objective, repeat=10)
path = timeit(lambda: wl.solve_wide_path(X, lams).objective, repeat=3)
print({"one_solve_s": one, "scan_s": path, "ratio": path / one, "backend": jax.default_backend()}, flush=True)
Xf = sparse_coded(8000, 384, seed=3)
lam = 0.1 * float(np.median(np.linalg.norm(Xf - Xf.mean(0), axis=1)))
t0, times = time.perf_counter(), []
wl.fit_dictionary(Xf, 4096, lam, key=jax.random.key(0), max_epochs=8, tol=0.0, progress=False,
                  callback=lambda e, h: times.append(time.perf_counter() - t0))  # fmt: skip
print({"k": 4096, "epoch_s": np.diff(np.r_[0, times]).round(3).tolist()}, flush=True)
