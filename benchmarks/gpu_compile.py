"""Where a finite fit's first-epoch time goes on a GPU: XLA autotuning, and the persistent cache.

Run as ``python benchmarks/gpu_compile.py TAG`` in fresh processes with different XLA_FLAGS /
``WL_CACHE`` (a jax persistent compilation cache directory); prints one JSON line per fit.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import sparse_coded  # noqa: E402

import widelimit as wl  # noqa: E402


def main(tag, ks):
    if os.environ.get("WL_CACHE"):
        jax.config.update("jax_compilation_cache_dir", os.environ["WL_CACHE"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    X = sparse_coded(8000, 384, seed=3)
    lam = 0.1 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    for k in ks:
        times = []
        t0 = time.perf_counter()
        wl.fit_dictionary(X, k, lam, key=jax.random.key(0), max_epochs=3, loss_tol=0, stop="loss", progress=False,
                          callback=lambda e, h: times.append(time.perf_counter() - t0))  # fmt: skip
        print(
            json.dumps(
                {"tag": tag, "k": k, "epoch_times": times, "backend": jax.default_backend()}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], [int(k) for k in sys.argv[2].split(",")])
