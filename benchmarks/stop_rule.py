"""Stopping on optimality (issue 19): a default ``fit_dictionary`` (stop rule ``"conditions"``:
alternating epochs, then the L-BFGS polish until code KKT, atom stationarity and bias hold to 1e-3)
against the baseline, the loss rule alone (``stop="loss"``: (L_{e−1} − L_e)/|L_e| ≤ 1e-6, the default
before), on real activations.

Data: ``datasets.activations(N)`` (d = 384), λ = ¼ of the median distance to the mean. For each
width K, both fits run in fresh processes (compilation included, as a user meets it), one after the
other in the same run. Recorded: epochs (the polish steps are the default fit's epochs past the
baseline's, which hands over at the same epoch), wall and compile time, the loss, the first-order
residuals, ``check_optimality(...).passed`` (tol 1e-3), and the default fit's wall time to reach
the baseline's final loss.
Goal (issue 19): the default fit passes ``check_optimality`` at K = 64, 256 and 1024, and stays
within 1.5× of the baseline's wall time to the baseline's final loss.

Writes ``benchmarks/results/stop_rule.json``.

    python benchmarks/stop_rule.py            # N = 8000, K = 64, 256, 1024
    python benchmarks/stop_rule.py --quick    # N = 2000, K = 64, 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import SMOKE, write  # noqa: E402


def one_fit(n, k, stop):
    """One fit in this (fresh) process; prints its record as JSON."""
    import jax

    import widelimit as wl
    from widelimit._finite.fit_file import result_name

    X = wl.datasets.activations(n).X
    lam = 0.25 * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    stamps = []
    t0 = time.perf_counter()

    def cb(e, h):
        stamps.append((e, time.perf_counter() - t0, float(h["loss"][-1])))

    opts = {"stop": "loss"} if stop == "loss" else {}
    fit = wl.fit_dictionary(X, k, lam, key=jax.random.key(0), progress=False, callback=cb, **opts)
    wall = time.perf_counter() - t0
    rep = wl.check_optimality(X, fit.atoms, fit.codes, fit.bias, lam)
    rec = {
        "K": k, "stop": stop, "result": result_name(fit.result), "epochs": int(fit.n_epochs),
        "seconds": wall, "compile_seconds": float(fit.compile_seconds),
        "loss": float(fit.loss), "gap": float(fit.gap), "code_kkt": float(fit.code_kkt),
        "atom_stationarity": float(fit.atom_stationarity),
        "bias_residual": float(fit.bias_residual), "passed": bool(rep.passed),
        "atoms_over_tol": int(np.sum(np.asarray(rep.atom_stationarity) > rep.tol)),
        "hull_pairs": len(rep.violated_pairs), "stamps": stamps,
    }  # fmt: skip
    print(json.dumps(rec))


def fresh(n, k, stop):
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(n), str(k), stop],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--one", nargs=3)
    a = p.parse_args()
    if a.one:
        return one_fit(int(a.one[0]), int(a.one[1]), a.one[2])
    n, widths = (8000, (64, 256, 1024)) if not a.quick else (2000, (64, 256))
    if SMOKE:
        n, widths = 400, (16,)
    rows = []
    for k in widths:
        base = fresh(n, k, "loss")
        new = fresh(n, k, "conditions")
        reach = [t for e, t, loss in new["stamps"] if loss <= base["loss"]]
        row = {
            "K": k,
            "baseline": {key: v for key, v in base.items() if key != "stamps"},
            "default": {key: v for key, v in new.items() if key != "stamps"},
            "polish_steps": new["epochs"] - base["epochs"],
            "seconds_to_baseline_loss": reach[0] if reach else None,
            "ratio_to_baseline_loss": (reach[0] / base["seconds"]) if reach else None,
            "ratio_total": new["seconds"] / base["seconds"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    path = write("stop_rule" + ("_quick" if a.quick else ""), {"n": n, "d": 384, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
