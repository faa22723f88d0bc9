"""The width study (issue 18 §1): how a finite dictionary's loss approaches the wide limit W(λ) on
real activations as the width K doubles, and whether it keeps splitting until every data ray has
an atom.

Data: ``widelimit.datasets.activations(N)`` (all-MiniLM-L6-v2 layer 3, d = 384). λ = (¼, ½) of the
median distance to the mean. Widths K = 16, 32, …, up to the first ≥ 2N, each warm-started by splitting the
previous width (``width_sweep``). Stop rule of every fit: the relative loss decrease per epoch
falls below ``--tol`` (1e-4), or ``--epochs`` epochs (60) run out (each fit's status is recorded).

Per width: L(K), the certified W(λ) and the relative gap (L − W)/W, L0, dead atoms, epochs, time,
the share of atoms at K split from an atom at K/2, and the share of points with ‖r_n‖ > (1 + 10⁻³)λ (the
points that still want an atom of their own: the wide certificate's failures). From these: the
log–log slope of the gap against K, the width at which the gap closes (< 1e-3), and the number of
data rays (points with ‖x_n − b‖ > λ, each its own ray in the wide optimum).

Writes ``benchmarks/results/width_study.json`` and ``width_study.png``.

    python benchmarks/width_study.py               # N = 8000, K = 16 … 16384 (doubling to ≥ 2N)
    python benchmarks/width_study.py --quick       # N = 200, K = 16 … 512 (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
from _common import RESULTS, SMOKE, write

import widelimit as wl


def study(X, lam, widths, key, epochs, tol):
    t = time.perf_counter()
    s = wl.width_sweep(
        X, widths, lam, key=key, max_epochs=epochs, loss_tol=tol, stop="loss", progress=False
    )
    total = time.perf_counter() - t
    rows = []
    Xj = np.asarray(X, np.float64)
    for i, (K, fit) in enumerate(zip(s.widths, s.fits, strict=True)):
        parents = np.asarray(fit.parents)
        R = Xj - np.asarray(fit.bias) - np.asarray(fit.codes) @ np.asarray(fit.atoms)
        # at the wide optimum every encoded point has ‖r_n‖ = λ exactly: count clear excess only
        over = float(np.mean(np.linalg.norm(R, axis=1) > lam * (1 + 1e-3)))
        rows.append({
            "K": int(K), "L": float(s.loss[i]), "gap": float(s.gap[i]), "l0": float(s.l0[i]),
            "dead": int(s.dead[i]), "epochs": int(fit.n_epochs), "seconds": float(fit.seconds),
            "converged": bool(fit.converged),
            "split_share": float(np.mean(parents >= 0)) if i > 0 else 0.0,
            "residual_over_lam_share": over,
            "atom_stationarity": float(fit.atom_stationarity), "code_kkt": float(fit.code_kkt),
        })  # fmt: skip
    gaps = np.array([r["gap"] for r in rows])
    Ks = np.array([r["K"] for r in rows], float)
    pos = gaps > 1e-6
    slope = float(np.polyfit(np.log(Ks[pos]), np.log(gaps[pos]), 1)[0]) if pos.sum() >= 2 else None
    closes = next((r["K"] for r in rows if r["gap"] < 1e-3), None)
    return {
        "lam": lam, "W": s.wide_optimum, "W_bound": s.wide_bound, "n_rays": s.n_rays,
        "gap_slope_loglog": slope, "closes_at": closes, "seconds": total, "rows": rows,
        # the split tree up to K = 1024 (past it the tree is one entry per atom: megabytes)
        "splits": [sp for sp in s.tree.splits() if sp["width"] <= 1024],
    }  # fmt: skip


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8000)
    p.add_argument("--lam-fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.n, a.epochs = (60, 5) if SMOKE else (200, 20)
    X = wl.datasets.activations(a.n).X
    # doubling from 16 up to the first width ≥ 2N (past N every ray can have its own atom)
    widths = [16 * 2**i for i in range(20) if 16 * 2 ** (i - 1) < 2 * a.n]
    s = float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    out = {"n": a.n, "d": int(X.shape[1]), "median_distance": s, "widths": widths,
           "epochs": a.epochs, "tol": a.tol, "studies": []}  # fmt: skip
    t0 = time.perf_counter()
    for f in a.lam_fractions:
        r = study(X, f * s, widths, jax.random.PRNGKey(0), a.epochs, a.tol)
        r["lam_fraction"] = f
        out["studies"].append(r)
        print(f"λ = {f}·median = {f * s:.3f}: W = {r['W']:.4f}, {r['n_rays']} data rays, gap closes "
              f"at K = {r['closes_at']}, log-log slope {r['gap_slope_loglog']}, {r['seconds']:.0f} s")  # fmt: skip
        for row in r["rows"]:
            print(
                f"  K {row['K']:5d}  L {row['L']:.4f}  gap {row['gap']:.4f}  L0 {row['l0']:.2f}  "
                f"dead {row['dead']:4d}  epochs {row['epochs']:3d}  "
                f"{'converged' if row['converged'] else 'max epochs'}  split {row['split_share']:.2f}  "
                f"‖r‖>λ {row['residual_over_lam_share']:.3f}  {row['seconds']:.1f} s",
                flush=True,
            )
    out["seconds"] = time.perf_counter() - t0
    name = "width_study_quick" if a.quick else "width_study"
    print(write(name, out), f"{out['seconds']:.0f} s in all")
    plot(out, name)


def plot(out, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for st, c in zip(out["studies"], ("C0", "C1", "C2", "C3"), strict=False):
        K = [r["K"] for r in st["rows"]]
        lab = f"λ = {st['lam_fraction']:g}·median"
        axes[0].plot(K, [r["L"] for r in st["rows"]], "o-", color=c, label=lab)
        axes[0].axhline(st["W"], color=c, ls="--", lw=1)
        axes[0].axhspan(st["W_bound"], st["W"], color=c, alpha=0.2)
        axes[1].plot(K, [max(r["gap"], 1e-6) for r in st["rows"]], "o-", color=c, label=lab)
        axes[1].axvline(st["n_rays"], color=c, ls=":", lw=1)
        axes[2].plot(
            K, [r["residual_over_lam_share"] for r in st["rows"]], "o-", color=c, label=lab
        )
    axes[0].set(
        xscale="log", xlabel="width K", ylabel="L(K)", title="loss → W(λ) (dashed; band: certified)"
    )
    axes[1].set(xscale="log", yscale="log", xlabel="width K", ylabel="(L − W)/W",
                title="gap to the wide limit (dotted: # data rays)")  # fmt: skip
    axes[2].set(xscale="log", xlabel="width K", ylabel="share of points with ‖r‖ > λ",
                title="points still wanting an atom")  # fmt: skip
    axes[0].legend()
    fig.suptitle(
        f"Width study on real activations (N = {out['n']}, d = {out['d']}); each fit stops when its "
        f"loss falls by < {out['tol']:g} per epoch or after {out['epochs']} epochs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, name + ".png"), dpi=130)


if __name__ == "__main__":
    main()
