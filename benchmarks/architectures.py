"""The architecture arena: every SAE architecture and ``fit_dictionary`` on the same real
activations, judged by one objective and the theory (issue 16 §4).

Data: ``widelimit.datasets.activations()`` (all-MiniLM-L6-v2 layer-3 residual stream, d = 384),
the first ``--n`` words. Each architecture trains at each width at two or three sparsities: k for
the k-architectures (TopK, AbsTopK, BatchTopK, Matryoshka), a λ grid for the λ-architectures
(standard and Gated: λ = (¼, ½, 1)·λ_c; JumpReLU: threshold-scale √(2λ) = (0.2, 0.4)·λ_c), chosen so
that their L0 lands in about the same range; the comparison is the loss–L0 frontier. Per model:

- normalised MSE = Σ||x − x̂||² / Σ||x − mean||², L0, dead features, training time (s);
- the implied λ (median ⟨d_i, r_n⟩ over active codes) and its spread;
- at the common λ_c = ¼ of the median distance to the mean: the L1 objective L of the SAE read as
  a dictionary, its certified gap (L − W)/W to the wide limit W(λ_c), the exact-code L on its decoder
  and the amortisation gap;
- the number and share of ordered feature pairs that fail the hull condition at λ_c, and the
  absorption candidates (``classify_pairs``: nearly-parallel pairs where one fires without the other);
- the SAE's own stationarity residuals (``sae_stationarity``).

Writes ``benchmarks/results/architectures.json`` and ``architectures.png`` (normalised MSE against
L0 per architecture and width; the L1 objective against L0 with the W(λ_c) asymptote).

    python benchmarks/architectures.py            # default: N = 4000, widths 256 and 1024
    python benchmarks/architectures.py --quick    # a smoke run (N = 600, width 64, 150 steps)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import SMOKE, write

import widelimit as wl
from widelimit._core.objective import loss_value

K_ARCHS = ("topk", "batchtopk", "matryoshka", "abstopk")
LAM_ARCHS = ("standard", "jumprelu", "gated")


def judge(name, arch, width, sparsity, X, lam_c, W, seconds, sae=None, fit=None):
    t0 = time.perf_counter()
    Xj = jnp.asarray(X)
    w = jnp.ones(X.shape[0], Xj.dtype)
    if sae is not None:
        D, Z, b = sae.as_dictionary(Xj)
        Xhat = sae(Xj)
        try:
            imp = wl.implied_lam(sae, Xj)
            implied, spread = imp.lam, imp.spread
        except ValueError:
            implied, spread = float("nan"), float("nan")
        st = wl.sae_stationarity(sae, Xj)
        stationarity = {
            "tangential_median": float(jnp.median(st.tangential)),
            "radial_median": float(jnp.median(st.radial)),
            "bias": float(st.bias),
        }
    else:
        D, Z, b = fit.atoms, fit.codes, fit.bias
        Xhat = b + Z @ D
        implied, spread, stationarity = lam_c, 0.0, {}
    L = float(loss_value(Xj, D, Z, b, lam_c, w))
    Z_exact = wl.encode(D, b, Xj, lam_c, tol=1e-4, max_steps=500)
    L_exact = float(loss_value(Xj, D, Z_exact, b, lam_c, w))
    Zn = np.asarray(Z)
    # hull pairs at λ_c on the model's own codes (signed AbsTopK: the ±d dictionary)
    rep = wl.check_optimality(Xj, D, Z, b, lam_c)
    k = D.shape[0]
    n_viol = len(rep.violated_pairs)
    pc = wl.classify_pairs(Zn, np.asarray(D))
    mse = float(jnp.sum((Xj - Xhat) ** 2) / jnp.sum((Xj - Xj.mean(0)) ** 2))
    row = {
        "name": name, "architecture": arch, "width": width, "sparsity": sparsity,
        "nmse": mse, "l0": float((Zn > 0).sum(1).mean()),
        "dead": int((Zn.max(0) <= 0).sum()), "train_seconds": seconds,
        "implied_lam": implied, "implied_lam_spread": spread,
        "L": L, "gap_to_wide": (L - W) / W, "L_exact": L_exact,
        "amortisation_gap": L - L_exact, "hull_violations": n_viol,
        "hull_violation_share": n_viol / max(k * (k - 1), 1),
        "absorption_candidates": len(pc.absorption), **stationarity,
    }  # fmt: skip
    print(
        f"{name:28s} L0 {row['l0']:6.1f}  nMSE {mse:.3f}  L {L:.4f}  gap {row['gap_to_wide']:.3f}  "
        f"amort {row['amortisation_gap']:.4f}  hull {n_viol:6d}  absorb {row['absorption_candidates']:5d}  "
        f"dead {row['dead']:4d}  λ̂ {implied:.3g}  train {seconds:.1f}s judge {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--ks", type=float, nargs="+", default=[8, 32])
    p.add_argument("--l1-scales", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--theta-scales", type=float, nargs="+", default=[0.2, 0.4])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.n, a.widths, a.ks, a.l1_scales, a.theta_scales, a.steps = (
            300 if SMOKE else 600,
            [16] if SMOKE else [64],
            [4] if SMOKE else [8],
            [0.5],
            [0.4],
            30 if SMOKE else 150,
        )
    act = wl.datasets.activations(a.n)
    X = act.X.astype(np.float64) if jax.config.jax_enable_x64 else act.X
    s = float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    lam_c = 0.25 * s
    W = float(wl.solve_wide(X, lam_c).objective)
    print(
        f"N = {a.n}, d = {X.shape[1]}, median distance to the mean {s:.3f}, λ_c = {lam_c:.3f}, W(λ_c) = {W:.4f}"
    )
    rows = []
    key = jax.random.PRNGKey(0)
    # JumpReLU's λ is an L0 weight (its threshold starts at θ = √(2λ)), the others' an L1 weight:
    # each grid is set in its own units, so that L0 covers about the k range
    lam_grid = {
        "standard": [f * lam_c for f in a.l1_scales],
        "gated": [f * lam_c for f in a.l1_scales],
        "jumprelu": [(f * lam_c) ** 2 / 2 for f in a.theta_scales],
    }
    for width in a.widths:
        opt = optax.adam(1e-3)
        for arch in K_ARCHS[:1] if SMOKE else K_ARCHS:
            for kk in a.ks:
                extra = {"k": kk}
                if arch == "matryoshka":
                    extra["widths"] = tuple(sorted({width // 4, width // 2, width}))
                res = wl.train_sae(
                    X, width, architecture=arch, key=key, steps=a.steps, optimizer=opt, **extra
                )
                rows.append(
                    judge(
                        f"{arch} K={width} k={kk:g}",
                        arch,
                        width,
                        kk,
                        X,
                        lam_c,
                        W,
                        res.seconds,
                        sae=res.sae,
                    )
                )
        for arch in LAM_ARCHS[:2] if SMOKE else LAM_ARCHS:
            for lam in lam_grid[arch]:
                res = wl.train_sae(
                    X, width, lam, architecture=arch, key=key, steps=a.steps, optimizer=opt
                )
                rows.append(
                    judge(
                        f"{arch} K={width} λ={lam:.3g}",
                        arch,
                        width,
                        lam,
                        X,
                        lam_c,
                        W,
                        res.seconds,
                        sae=res.sae,
                    )
                )
        t = time.perf_counter()
        fit = wl.fit_dictionary(X, width, lam_c, key=key, max_epochs=30, progress=False)
        rows.append(
            judge(
                f"fit_dictionary K={width}",
                "fit_dictionary",
                width,
                lam_c,
                X,
                lam_c,
                W,
                time.perf_counter() - t,
                fit=fit,
            )
        )
    out = {"n": a.n, "d": int(X.shape[1]), "lam_c": lam_c, "W": W, "median_distance": s,
           "steps": a.steps, "data": act.versions, "rows": rows}  # fmt: skip
    name = "architectures_quick" if a.quick else "architectures"
    print(write(name, out))
    plot(out, name)


def plot(out, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    archs = sorted({r["architecture"] for r in out["rows"]})
    colours = dict(zip(archs, plt.cm.tab10.colors, strict=False))
    for width, marker in zip(sorted({r["width"] for r in out["rows"]}), "os^D", strict=False):
        for arch in archs:
            rs = sorted(
                (r for r in out["rows"] if r["architecture"] == arch and r["width"] == width),
                key=lambda r: r["l0"],
            )
            if not rs:
                continue
            kw = dict(color=colours[arch], marker=marker, label=f"{arch} K={width}")
            axes[0].plot([r["l0"] for r in rs], [r["nmse"] for r in rs], **kw)
            axes[1].plot([r["l0"] for r in rs], [r["L"] for r in rs], **kw)
    axes[1].axhline(out["W"], color="k", ls="--", label="W(λ_c), wide limit")
    axes[0].set(xscale="log", yscale="log", xlabel="L0 (codes per row)", ylabel="normalised MSE")
    axes[1].set(xscale="log", yscale="log", xlabel="L0 (codes per row)",
                ylabel=f"L at λ_c = {out['lam_c']:.3g}")  # fmt: skip
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"SAE architectures on real activations (N = {out['n']}, d = {out['d']})")
    fig.tight_layout()
    import os

    from _common import RESULTS

    fig.savefig(os.path.join(RESULTS, name + ".png"), dpi=130)


if __name__ == "__main__":
    main()
