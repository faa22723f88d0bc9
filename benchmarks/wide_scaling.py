"""Wide-limit solver scaling (issue 2): vs cvxpy+Clarabel, data passes, streaming, λ paths.

Writes benchmarks/results/wide_scaling.json and .png. ``--quick`` runs small sizes only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, SMOKE, sparse_coded, timeit, write  # noqa: E402

import widelimit as wl  # noqa: E402
from widelimit._wide.solver import default_rtol  # noqa: E402


def pick_lam(X, rule="half_median"):
    """λ from the distances to the mean (on a 4096-row subsample). ``"half_median"``: half the
    median distance; at d = 768 the distances concentrate, so all but a few points in 10^5 are
    encoded (lie outside the λ-ball around b). ``"q05"``: their 5th percentile, so about 95 % are encoded and
    some lie within λ of b (where the certificate is second order in the bias residual)."""
    Xs = np.asarray(X[:: max(1, len(X) // 4096)], np.float64)
    dist = np.linalg.norm(Xs - Xs.mean(0), axis=1)
    if rule == "half_median":
        return 0.5 * float(np.median(dist))
    if rule == "q05":
        return float(np.quantile(dist, 0.05))
    raise ValueError(rule)


def vs_cvxpy(sizes, d=384):
    import cvxpy as cp

    out = []
    for n in sizes:
        X = sparse_coded(n, d, seed=1).astype(np.float64)
        lam = pick_lam(X)
        M, b = cp.Variable((n, d)), cp.Variable(d)
        obj = 0.5 / n * cp.sum_squares(X - M - cp.reshape(b, (1, d), order="C")) + lam / n * cp.sum(
            cp.norm(M, 2, axis=1)
        )
        prob = cp.Problem(cp.Minimize(obj))
        t = time.perf_counter()
        prob.solve(solver=cp.CLARABEL)
        wall = time.perf_counter() - t
        ref = prob.value
        Xj = jnp.asarray(X)
        sol = wl.solve_wide(Xj, lam)
        acc = abs(float(sol.objective) - ref) / abs(ref)
        # equal accuracy: ask widelimit for a certified gap at Clarabel's achieved accuracy (≥1e-10)
        rtol = max(acc, 1e-10)
        t_wl = timeit(lambda: wl.solve_wide(Xj, lam, rtol=rtol).objective, repeat=5)
        out.append(
            dict(
                n=n,
                d=d,
                lam=lam,
                clarabel_solve_s=prob.solver_stats.solve_time,
                clarabel_wall_s=wall,
                clarabel_objective=ref,
                widelimit_s=t_wl,
                widelimit_objective=float(sol.objective),
                widelimit_gap=float(sol.gap),
                rel_diff=acc,
                speedup_vs_solve=prob.solver_stats.solve_time / t_wl,
            )
        )
        print(out[-1], flush=True)
    return out


def passes(sizes, d=768, rules=("half_median", "q05")):
    out = []
    for n in sizes:
        X0 = sparse_coded(n, d, seed=2)
        for dtype in (jnp.float32, jnp.float64):
            X = jnp.asarray(X0, dtype)
            v = jnp.ones((d,), dtype)
            mv = jax.jit(lambda X, v: X @ v)
            for rule in rules:
                lam = pick_lam(X, rule)
                t_pass = timeit(lambda: mv(X, v), repeat=5)
                sol = wl.solve_wide(X, lam)
                t_solve = timeit(lambda: wl.solve_wide(X, lam).objective, repeat=3)
                rec = dict(
                    n=n,
                    d=d,
                    dtype=jnp.dtype(dtype).name,
                    lam_rule=rule,
                    lam=lam,
                    encoded=float(jnp.mean(sol.encoded)),
                    solve_s=t_solve,
                    pass_s=t_pass,
                    passes=t_solve / t_pass,
                    steps=int(sol.num_steps),
                    gap=float(sol.gap),
                    rtol=default_rtol(dtype),
                )
                out.append(rec)
                print(rec, flush=True)
            del X
        del X0
    return out


_STREAM_CHILD = """
import sys, time, numpy as np
import widelimit as wl
def hwm():  # peak resident set of this process image, kB (ru_maxrss survives fork+exec)
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
path, lam, chunk = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
base0 = hwm()
wl.solve_wide(np.load(path, mmap_mode="r")[: 2 * chunk], lam, chunk_rows=chunk)  # compile
base = hwm()
t = time.perf_counter()
sol = wl.solve_wide(np.load(path, mmap_mode="r"), lam, chunk_rows=chunk)
dt = time.perf_counter() - t
peak = hwm()
print(base0, dt, base, peak, float(sol.objective), float(sol.gap), int(sol.num_steps))
"""


_FRESH = """
import json, os, sys, time
t0 = time.perf_counter()
import jax
import numpy as np
import widelimit as wl
from widelimit._core.compile_clock import compile_seconds
sys.path.insert(0, sys.argv[1])
from _common import sparse_coded, timeit
t_import = time.perf_counter() - t0
n, d = int(sys.argv[2]), int(sys.argv[3])
out = {"n": n, "d": d, "import_s": t_import}
for tag, rows in (("", n), ("new_n_", 2 * n)):
    X = sparse_coded(rows, d, seed=5)
    lam = 0.5 * float(np.median(np.linalg.norm(X[:4096] - X[:4096].mean(0), axis=1)))
    c, t = compile_seconds(), time.perf_counter()
    jax.block_until_ready(wl.solve_wide(X, lam).objective)
    out[tag + "first_s"], out[tag + "compile_s"] = time.perf_counter() - t, compile_seconds() - c
    out[tag + "warm_s"] = timeit(lambda: wl.solve_wide(X, lam).objective, repeat=3)
print(json.dumps(out))
"""


def fresh(n=100_000, d=768):
    """A user's first ``solve_wide`` in a fresh process (float32): the import, the first call
    (compilation included) and warm calls; then the first call at a new N = 2n (what a new N
    compiles again)."""
    run = subprocess.run(
        [sys.executable, "-c", _FRESH, os.path.dirname(os.path.abspath(__file__)), str(n), str(d)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(run.stdout.strip().splitlines()[-1])
    print(out, flush=True)
    return out


def streaming(n, d=768, chunk=65536):
    X = sparse_coded(n, d, seed=3)
    lam = pick_lam(X)
    with tempfile.TemporaryDirectory(dir=os.environ.get("WL_BENCH_TMP")) as tmp:
        path = os.path.join(tmp, "x.npy")
        np.save(path, X)
        Xj = jnp.asarray(X)
        del X
        t_mem = timeit(lambda: wl.solve_wide(Xj, lam).objective, repeat=2)
        ref = float(wl.solve_wide(Xj, lam).objective)
        del Xj
        t = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(1 << 26):
                pass
        t_read = time.perf_counter() - t
        res = subprocess.run(
            [sys.executable, "-c", _STREAM_CHILD, path, str(lam), str(chunk)],
            capture_output=True,
            text=True,
            check=True,
        )
        base0, dt, base, peak, obj, gap, steps = res.stdout.split()[-7:]
    chunk_mb = chunk * d * 4 / 2**20
    rec = dict(
        n=n,
        d=d,
        chunk_rows=chunk,
        chunk_mb=chunk_mb,
        stream_s=float(dt),
        in_memory_s=t_mem,
        read_once_s=t_read,
        time_ratio=float(dt) / (2 * t_mem + t_read),
        peak_rss_mb=int(peak) / 1024,
        rss_after_import_mb=int(base0) / 1024,
        rss_after_compile_mb=int(base) / 1024,
        rss_over_import_mb=(int(peak) - int(base)) / 1024,
        objective=float(obj),
        in_memory_objective=ref,
        gap=float(gap),
        steps=int(steps),
    )
    print(rec, flush=True)
    return rec


def path_bench(n=20000, d=384, k=64):
    X = jnp.asarray(sparse_coded(n, d, seed=4))
    lam = pick_lam(X)
    lams = jnp.asarray(np.geomspace(lam / 20, lam * 4, k), X.dtype)
    t_one = timeit(lambda: wl.solve_wide(X, lam).objective)
    rec = dict(n=n, d=d, n_lams=k, one_solve_s=t_one)
    for method in ("scan", "vmap"):
        t = timeit(lambda m=method: wl.solve_wide_path(X, lams, method=m).objective, repeat=2)
        rec[f"{method}_s"] = t
        rec[f"{method}_ratio"] = t / t_one
    print(rec, flush=True)
    return rec


def plot(payload, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    labels = {"half_median": "all encoded", "q05": "95 % encoded"}
    for dt in ("float32", "float64"):
        for rule, ls in (("half_median", "o-"), ("q05", "s--")):
            rows = [
                r
                for r in payload["passes"]
                if r["dtype"] == dt and r.get("lam_rule", "half_median") == rule
            ]
            if rows:
                ax.plot(
                    [r["n"] for r in rows],
                    [r["passes"] for r in rows],
                    ls,
                    label=f"{dt}, {labels[rule]}",
                )
    ax.axhline(10, color="k", ls=":", label="goal ≤ 10")
    ax.set(
        xscale="log",
        xlabel="n_samples (d = 768)",
        ylabel="solve time / one X@v pass",
        title="(b) data passes to certified gap",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    rows = payload["cvxpy"]
    ax.bar([str(r["n"]) for r in rows], [r["speedup_vs_solve"] for r in rows])
    ax.set(
        yscale="log",
        xlabel="n_samples (d = 384)",
        ylabel="Clarabel solve time / widelimit",
        title="(a) speed-up vs cvxpy + Clarabel",
    )
    ax = axes[2]
    p = payload["path"]
    ax.bar(["one solve", "scan path", "vmap path"], [p["one_solve_s"], p["scan_s"], p["vmap_s"]])
    ax.set(ylabel="seconds", title=f"(d) {p['n_lams']}-λ path, n={p['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--only",
        choices=["cvxpy", "passes", "streaming", "path", "fresh"],
        help="rerun one section and merge it into the existing JSON (its date recorded)",
    )
    a = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    if a.only:
        sections = dict(
            cvxpy=lambda: vs_cvxpy([1000, 4000]),
            passes=lambda: passes([10_000, 100_000, 1_000_000]),
            streaming=lambda: streaming(1_000_000),
            path=path_bench,
            fresh=fresh,
        )
        with open(os.path.join(RESULTS, "wide_scaling.json")) as f:
            payload = {k: v for k, v in json.load(f).items() if k != "machine"}
        payload[a.only] = sections[a.only]()
        payload.setdefault("reruns", {})[a.only] = time.strftime(
            "%Y-%m-%d %H:%M UTC", time.gmtime()
        )
        print("wrote", write("wide_scaling", payload))
        plot(payload, os.path.join(RESULTS, "wide_scaling.png"))
        return
    if a.quick and SMOKE:
        payload = dict(
            cvxpy=vs_cvxpy([60]), passes=passes([2000]), streaming=streaming(5000, chunk=1024),
            path=path_bench(1000, 16, 4), fresh=fresh(2000, 16),
        )  # fmt: skip
    elif a.quick:
        payload = dict(
            cvxpy=vs_cvxpy([300]),
            passes=passes([10_000, 30_000]),
            streaming=streaming(50_000, chunk=8192),
            path=path_bench(5000, 64, 16),
            fresh=fresh(10_000, 768),
        )
    else:
        payload = dict(
            cvxpy=vs_cvxpy([1000, 4000]),
            passes=passes([10_000, 100_000, 1_000_000]),
            streaming=streaming(1_000_000),
            path=path_bench(),
            fresh=fresh(),
        )
    name = "wide_scaling_quick" if a.quick else "wide_scaling"
    print("wrote", write(name, payload))
    plot(payload, os.path.join(RESULTS, name + ".png"))


if __name__ == "__main__":
    main()
