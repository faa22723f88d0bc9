"""The first run (issue 18 §2): a user's first ``fit_dictionary`` in a fresh process, compilation
included, against scikit-learn's ``MiniBatchDictionaryLearning`` in the same process, on real
activations.

Data: ``datasets.activations(N)`` (d = 384), λ = ¼ of the median distance to the mean. In one fresh
process per configuration: widelimit's full-batch fit (the loss rule alone, ``stop="loss"``: the
time to an objective does not depend on the later polish) with the time of each epoch counted from
the call (the wide solve, seeding and every compilation included); then scikit-learn (positive
codes, ``fit_algorithm="cd"``, batch 256, 5 epochs, centred data), whose objective is L with exact
codes for its unit-normalised atoms and b = the mean (``finite_scaling.exact_loss``). Reported:
widelimit's time to sklearn's objective, its compile seconds by then, and the ratio.
Goal (issue 18): ≥ 10× sooner at K = 256 (N = 4000) and K = 1024 (N = 8000).
Then, per configuration, two more fresh processes share JAX's persistent compilation cache (the
CLI's default; opt-in in the library) in a new directory: the first fills it, the second is timed
to the same objective (``with_compile_cache``; sklearn's time from the first process: a second
process that loads its programs from the cache still traces and lowers them).

Writes ``benchmarks/results/first_run.json``.

    python benchmarks/first_run.py            # (N, K) = (4000, 256), (8000, 1024)
    python benchmarks/first_run.py --quick    # (2000, 128)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(__file__))
from _common import SMOKE, write  # noqa: E402


def one(n, k, target=None):
    """Both fits in this fresh process; prints the record as JSON. With ``target`` (sklearn's
    objective from an earlier process), widelimit's fit alone, timed to it."""
    import jax
    import numpy as np

    import widelimit as wl
    from widelimit._core.compile_clock import compile_seconds

    warnings.filterwarnings("ignore")  # sklearn's per-sample ConvergenceWarnings
    from finite_scaling import exact_loss, run_sklearn

    X = wl.datasets.activations(n).X
    lam = 0.25 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    key = jax.random.key(0)  # an input, like sklearn's random_state: made before the clock
    compile_seconds()
    stamps = []
    t0 = time.perf_counter()

    def cb(e, h):
        stamps.append((time.perf_counter() - t0, float(h["loss"][-1]), compile_seconds()))

    fit = wl.fit_dictionary(X, k, lam, key=key, stop="loss", progress=False, callback=cb)
    if target is not None:
        hit = [s for s in stamps if s[1] <= target]
        rec = {"seconds_to_target": hit[0][0] if hit else None,
               "compile_seconds_by_then": hit[0][2] if hit else None}  # fmt: skip
        print(json.dumps(rec))
        return
    t_sk, atoms, mean = run_sklearn(X, k, lam, 5)
    L_sk, _ = exact_loss(X, atoms, mean, lam)
    hit = [s for s in stamps if s[1] <= L_sk]
    rec = {
        "n": n, "K": k, "sklearn_seconds": t_sk, "sklearn_loss": L_sk,
        "widelimit_seconds_to_sklearn_loss": hit[0][0] if hit else None,
        "widelimit_compile_seconds_by_then": hit[0][2] if hit else None,
        "widelimit_epochs_to_sklearn_loss": (stamps.index(hit[0]) + 1) if hit else None,
        "widelimit_final_loss": float(fit.loss), "widelimit_epochs": int(fit.n_epochs),
        "widelimit_seconds": stamps[-1][0],
        "speedup": (t_sk / hit[0][0]) if hit else None,
    }  # fmt: skip
    print(json.dumps(rec))


def cached(n, k, row):
    """Time to ``row``'s sklearn objective in the second of two fresh processes that share a new
    persistent compilation cache (every program cached, however fast it compiled)."""
    with tempfile.TemporaryDirectory(prefix="widelimit-xla-") as cache:
        env = dict(
            os.environ, JAX_COMPILATION_CACHE_DIR=cache,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )  # fmt: skip
        cmd = [sys.executable, __file__, "--one", str(n), str(k)]
        cmd += ["--target", repr(row["sklearn_loss"])]
        for _ in range(2):  # the first fills the cache
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
    t = rec["seconds_to_target"]
    rec["speedup"] = row["sklearn_seconds"] / t if t else None
    return rec


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--one", nargs=2, type=int)
    p.add_argument("--target", type=float)
    a = p.parse_args()
    if a.one:
        return one(*a.one, target=a.target)
    configs = [(4000, 256), (8000, 1024)] if not a.quick else [(2000, 128)]
    if SMOKE:
        configs = [(300, 16)]
    rows = []
    for n, k in configs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), str(k)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows[-1]["with_compile_cache"] = cached(n, k, rows[-1])
        print(json.dumps(rows[-1]), flush=True)
    path = write("first_run" + ("_quick" if a.quick else ""), {"d": 384, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
