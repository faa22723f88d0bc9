"""The numbers behind the README's accelerator table, on whatever backend JAX picks (GPU when lent).

1. Whether this backend's default float32 matmul is exact float32 (TF32 on NVIDIA GPUs is not), and
   that widelimit's products (``full_precision``) are.
2. Wide limit: data passes to the certified gap (N = 1e5, 1e6; d = 768; f32/f64) and a 64-λ path.
3. Finite fits, N = 8000, d = 384, λ as in ``finite_scaling.py``: time per epoch for K = 64…4096 and
   the time to the scikit-learn/SPAMS objectives recorded in ``results/finite_scaling.json``.
Writes benchmarks/results/device_<backend>.json.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, sparse_coded, write  # noqa: E402
from finite_scaling import run_widelimit  # noqa: E402
from wide_scaling import passes, path_bench  # noqa: E402

from widelimit._core.precision import full_precision  # noqa: E402


def matmul_error():
    r = np.random.default_rng(0)
    A, B = r.normal(size=(2048, 2048)), r.normal(size=(2048, 2048))
    ref = A @ B
    Aj, Bj = jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    err = lambda C: float(np.abs(np.asarray(C, np.float64) - ref).max() / np.abs(ref).max())  # noqa: E731
    return {
        "default_f32_rel_err": err(f(Aj, Bj)),
        "full_precision_f32_rel_err": err(
            full_precision(lambda a, b: jax.jit(lambda a, b: a @ b)(a, b))(Aj, Bj)
        ),
    }


def finite(ks=(64, 256, 1024, 4096), epochs=10):
    ref = json.load(open(os.path.join(RESULTS, "finite_scaling.json")))["vs_sklearn_at_k"]
    X = sparse_coded(8000, 384, seed=3)
    lam = 0.1 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    times, losses, _ = run_widelimit(X, ref["k"], lam, 12)

    def hit(target):
        idx = np.flatnonzero(losses <= target)
        return float(times[idx[0]]) if len(idx) else None

    out = {"k": ref["k"], "epoch_times": times.tolist(), "epoch_losses": losses.tolist(),
           "time_to_sklearn_loss": hit(ref["sklearn"]["loss"]), "sklearn_cpu_s": ref["sklearn"]["seconds"],
           "time_to_spams_loss": hit(ref["spams"]["loss"]), "spams_cpu_s": ref["spams"]["seconds"], "per_epoch": []}  # fmt: skip
    print(out, flush=True)
    for k in ks:
        times, _, _ = run_widelimit(X, k, lam, epochs)
        row = {
            "k": k,
            "epoch_s": float(np.median(np.diff(times)[-4:])),
            "first_epoch_s": float(times[0]),
        }
        out["per_epoch"].append(row)
        print(row, flush=True)
    kk = [r["k"] for r in out["per_epoch"]]
    out["loglog_slope"] = float(
        np.polyfit(np.log(kk), np.log([r["epoch_s"] for r in out["per_epoch"]]), 1)[0]
    )
    return out


def main():
    """Each section is written as soon as it ends, so a run cut short keeps what it measured."""
    jax.config.update("jax_enable_x64", True)
    name, payload = f"device_{jax.default_backend()}", {}
    for key, run in (("matmul", matmul_error), ("finite", finite),
                     ("passes", lambda: passes([100_000, 1_000_000])), ("path", path_bench)):  # fmt: skip
        t0 = time.perf_counter()
        payload[key] = run()
        payload[key + "_section_s"] = time.perf_counter() - t0
        print(key, payload[key], flush=True)
        write(name, payload)


if __name__ == "__main__":
    main()
