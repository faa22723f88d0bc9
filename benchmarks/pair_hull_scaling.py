"""All-pairs hull check at scale (issue 4): sparse ``hull_table`` vs a brute-force numpy version.

Codes: N × K, each entry active with probability ``density`` (1 %), Exp(1) magnitudes, random
unit atoms in d = 64. Goal: K = 4096, N = 100 000 in < 30 s on the 2-core CPU.
Writes benchmarks/results/pair_hull_scaling.json and .png; ``--quick`` runs small sizes only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _common import RESULTS, SMOKE, write  # noqa: E402
from helpers import hull_bounds_brute  # noqa: E402

import widelimit as wl  # noqa: E402


def sparse_codes(n, k, density=0.01, seed=0, d=64):
    r = np.random.default_rng(seed)
    Z = np.zeros((n, k), np.float32)
    nnz = int(density * n * k)
    Z[r.integers(0, n, nnz), r.integers(0, k, nnz)] = r.exponential(size=nnz).astype(np.float32)
    D = r.normal(size=(k, d)).astype(np.float32)
    return Z, D / np.linalg.norm(D, axis=1, keepdims=True)


def time_sparse(Z, D, repeat=2):
    wl.hull_table(Z[:256], D)  # compile the small-shape path is not enough: warm up in full
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        tab = wl.hull_table(Z, D)
        tab.margin.block_until_ready()
        times.append(time.perf_counter() - t)
    return min(times), tab


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    brute_size = (4000, 256) if a.quick else (20000, 512)
    scale = (
        [(20000, 512), (50000, 2048)] if a.quick else [(20000, 512), (50000, 2048), (100000, 4096)]
    )
    if SMOKE:
        brute_size, scale = (600, 32), [(2000, 64)]
    rows = []
    n, k = brute_size
    Z, D = sparse_codes(n, k)
    t_sparse, tab = time_sparse(Z, D)
    t = time.perf_counter()
    lo, hi = hull_bounds_brute(Z)
    t_brute = time.perf_counter() - t
    off = ~np.eye(k, dtype=bool)
    equal = bool(
        np.array_equal(np.asarray(tab.lo)[off], lo[off])
        and np.array_equal(np.asarray(tab.hi)[off], hi[off])
    )
    brute = {"n": n, "k": k, "sparse_s": t_sparse, "brute_numpy_s": t_brute,
             "speedup": t_brute / t_sparse, "equal": equal}  # fmt: skip
    print(brute, flush=True)
    for n, k in scale:
        Z, D = sparse_codes(n, k)
        t_sparse, tab = time_sparse(Z, D)
        row = {"n": n, "k": k, "density": 0.01, "pairs": k * (k - 1), "seconds": t_sparse,
               "exact_pairs": tab.n_exact_pairs}  # fmt: skip
        print(row, flush=True)
        rows.append(row)
        del Z
    name = "pair_hull_scaling_quick" if a.quick else "pair_hull_scaling"
    path = write(
        name, {"vs_brute_force": brute, "scaling": rows, "goal": "K=4096, N=1e5, 1% density < 30 s"}
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.loglog(
        [r["pairs"] * r["n"] for r in rows], [r["seconds"] for r in rows], "o-", label="hull_table"
    )
    ax.loglog(
        [brute["k"] ** 2 * brute["n"]], [brute["brute_numpy_s"]], "s", label="brute force (numpy)"
    )
    ax.axhline(30, color="red", ls="--", lw=1, label="goal (30 s)")
    ax.set(
        xlabel="N × K² (work of brute force)",
        ylabel="seconds",
        title="all-pairs hull check, 1% density",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, name + ".png"), dpi=120)
    print("wrote", path)


if __name__ == "__main__":
    main()
