"""Shared helpers for the benchmark scripts: timing, data, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np

# make test's smoke runs (tests/test_benchmarks.py): --quick at still smaller sizes, only to check
# that every script runs end to end
SMOKE = bool(os.environ.get("WIDELIMIT_BENCH_SMOKE"))

# where results go: benchmarks/results, or $WIDELIMIT_BENCH_RESULTS (the smoke runs of make test)
RESULTS = os.environ.get("WIDELIMIT_BENCH_RESULTS") or os.path.join(
    os.path.dirname(__file__), "results"
)


def timeit(f, repeat=3):
    """Median wall time of ``f()`` (blocking on JAX outputs) after one warm-up call."""
    jax.block_until_ready(f())
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    """What a result was measured on: CPU, cores, versions, backend, devices, the dtype and the
    XLA flags it ran under (an autotuning level, say)."""
    import jaxlib

    devices = jax.devices()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "devices": [str(d) for d in devices],
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def write(name, payload):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2)
    os.replace(tmp, path)
    return path


def sparse_coded(n, d, k_true=None, density=0.02, seed=0, dtype=np.float32):
    """Sparse-coded data: x = b + Σ_k z_k d_k + noise, heavy-tailed (lognormal) nonnegative codes.

    k_true = 4·d unit atoms (Gaussian directions), each active with probability ``density``,
    magnitudes lognormal(0, 0.75); bias offset b ~ N(0, 1)·2; isotropic noise 0.05.
    """
    r = np.random.default_rng(seed)
    k_true = k_true or 4 * d
    D = r.normal(size=(k_true, d)).astype(dtype)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    b = (r.normal(size=d) * 2).astype(dtype)
    X = np.empty((n, d), dtype)
    step = 65536
    for i in range(0, n, step):
        m = min(step, n - i)
        Z = (r.random((m, k_true)) < density) * r.lognormal(0, 0.75, (m, k_true))
        X[i : i + m] = b + Z.astype(dtype) @ D + 0.05 * r.normal(size=(m, d)).astype(dtype)
    return X
