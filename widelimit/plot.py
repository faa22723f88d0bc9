"""Figures (optional layer: needs matplotlib; the core never imports this module)."""

from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend() if matplotlib.get_backend() else "Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _axes(ax, figsize):
    """``ax``, or the axes of a new figure of ``figsize``."""
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def plot_wide(X, sol, *, ax=None, dims=(0, 1)):
    """Scatter the data (first two features, or ``dims``), encoded points coloured by their code
    ‖m_n‖, unencoded points grey, the bias b as a star and the λ-ball around it."""
    X = np.asarray(X)
    i, j = dims if X.shape[1] > 1 else (0, 0)
    ax = _axes(ax, (5.2, 4.6))
    enc = np.asarray(sol.encoded)
    codes = np.asarray(sol.code_norms)
    b = np.asarray(sol.bias)
    ax.scatter(X[~enc, i], X[~enc, j], s=6, c="0.7", label="not encoded (‖x−b‖ ≤ λ)")
    sc = ax.scatter(X[enc, i], X[enc, j], s=6, c=codes[enc], cmap="viridis", label="own atom")
    ax.scatter([b[i]], [b[j]], marker="*", s=250, c="red", edgecolor="k", label="bias b", zorder=5)
    t = np.linspace(0, 2 * np.pi, 200)
    lam = float(sol.lam)
    ax.plot(b[i] + lam * np.cos(t), b[j] + lam * np.sin(t), "r--", lw=1, label="λ-ball")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set(
        xlabel=f"feature {i}",
        ylabel=f"feature {j}",
        title=f"wide limit: W = {float(sol.objective):.4g}, gap {float(sol.gap):.1e}",
    )
    ax.figure.colorbar(sc, ax=ax, label="code ‖m_n‖")
    ax.legend(loc="best", fontsize=7)
    return ax.figure


def _hull_segment(ax, x, y, **kw):
    ax.plot(x, y, color="red", lw=4, alpha=0.7, solid_capstyle="round", **kw)


def plot_pair_hull(pair, *, ax=None, max_points: int = 4000):
    """The paper's pair figure: normalised responses (z_i/μ_i − 1, z_j/μ_j − 1), in red the hull of
    each feature while the other is off (x = −1 and y = −1), and the targets −c_ij marked.

    ``pair`` is a ``PairHull`` built from codes (``pair_hull(codes, i, j, atoms=...)``)."""
    if pair.responses is None:
        raise ValueError("plot_pair_hull needs a PairHull built from codes (it has no responses)")
    ax = _axes(ax, (4.4, 4.2))
    R = np.asarray(pair.responses)
    if len(R) > max_points:
        R = R[np.random.default_rng(0).choice(len(R), max_points, replace=False)]
    ax.scatter(R[:, 0], R[:, 1], s=5, c="0.35", alpha=0.5, label="datapoints")
    c = float(pair.cosine)
    lo, hi, _ = (float(v) for v in pair.normalised())
    if np.isfinite(lo):
        _hull_segment(ax, [-1, -1], [lo, hi], label=f"hull of {pair.j} while {pair.i} is off")
    full = np.asarray(pair.responses)
    off_j = full[:, 1] == -1
    if off_j.any():
        _hull_segment(ax, [full[off_j, 0].min(), full[off_j, 0].max()], [-1, -1])
    bad = pair.violated
    ax.scatter(
        [-1],
        [-c],
        marker="X" if bad else "o",
        s=120,
        c="orange" if bad else "green",
        edgecolor="k",
        zorder=5,
        label=f"target −c = {-c:.2f}" + (" (outside: unstable)" if bad else ""),
    )
    ax.scatter([-c], [-1], marker="o", s=60, facecolor="none", edgecolor="k", zorder=5)
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set(xlabel=f"z_{pair.i}/μ_{pair.i} − 1", ylabel=f"z_{pair.j}/μ_{pair.j} − 1")
    ax.legend(loc="upper right", fontsize=7)
    return ax.figure


def plot_hull_panels(panels, *, i: int = 0, j: int = 1):
    """Three panels (dict name → ToyData, e.g. ``datasets.hull_panels``), each titled pass/fail."""
    from ._analysis.pair_hull import pair_hull

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items(), strict=True):
        pair = pair_hull(p.codes, i, j, atoms=p.atoms)
        plot_pair_hull(pair, ax=ax)
        ax.set_title(f"{name}: {'fails (unstable)' if pair.violated else 'passes'}")
    fig.tight_layout()
    return fig


def plot_report(report, *, worst: int = 10):
    """Whole-dictionary summary: histogram of normalised hull margins (margin/μ_j; < 0 violated),
    the worst violated pairs, and each atom's mop-up (stationarity) residual."""
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8))
    v = np.asarray(report.violated_pairs)[:worst]
    if report.compact:  # only the violated pairs are known: their severities
        sevs = np.asarray(report.hull_pairs.severity)
        finite, sev = -sevs[np.isfinite(sevs)], sevs[:worst]
        what = "violated ordered pairs (a compact report keeps no others)"
    else:
        margin = np.asarray(report.hull_margin)
        mu = np.asarray(report.mu)
        m = margin / np.where(mu > 0, mu, 1)[None, :]
        finite, what = m[np.isfinite(m)], "ordered pairs"
        sev = -m[v[:, 0], v[:, 1]]
    a1.hist(np.clip(finite, -2, 2), bins=60, color="0.5")
    a1.axvline(0, color="red", lw=1)
    a1.set(
        xlabel="hull margin / μ_j (clipped to ±2)",
        ylabel=what,
        title="feature–feature margins",
    )
    if len(v):
        sev = np.where(np.isfinite(sev), sev, np.nanmax(np.where(np.isfinite(sev), sev, 0)) + 1)
        a2.barh([f"({i}, {j})" for i, j in v][::-1], sev[::-1], color="firebrick")
        a2.set(
            xlabel="violation (−margin/μ_j; dense pairs at the top)", title=f"worst {len(v)} pairs"
        )
    else:
        a2.text(0.5, 0.5, "no violated pairs", ha="center", va="center", transform=a2.transAxes)
        a2.set(title="worst pairs")
    stat = np.asarray(report.atom_stationarity)
    a3.bar(np.arange(len(stat)), stat, color="steelblue")
    a3.axhline(report.tol, color="red", lw=1, ls="--", label="tol")
    a3.set(xlabel="atom", ylabel="unabsorbed residual / (λΣz)", title="atom (mop-up) condition")
    a3.legend(fontsize=7)
    fig.suptitle(report.summary().splitlines()[0], fontsize=10)
    fig.tight_layout()
    return fig


def plot_sweep_loss(sweep, *, ax=None):
    """L(K) against width with the wide-limit asymptote W(λ) and its certified band [W_low, W]."""
    ax = _axes(ax, (5, 3.8))
    w = np.asarray(sweep.widths)
    ax.plot(w, sweep.loss, "o-", label="L(K), best fit")
    ax.axhline(sweep.wide_optimum, color="red", lw=1, label="W(λ): wide limit")
    ax.axhspan(
        sweep.wide_bound, sweep.wide_optimum, color="red", alpha=0.15, label="certified band"
    )
    ax.set_xscale("log", base=2)
    ax.set(xlabel="width K", ylabel="loss L", title=f"loss against width (λ = {sweep.lam:.3g})")
    ax.legend(fontsize=8)
    return ax.figure


def plot_sweep_gap(sweep, *, ax=None):
    """Certified relative gap (L(K) − W_low)/|W_low| against width, log–log."""
    ax = _axes(ax, (5, 3.8))
    w = np.asarray(sweep.widths)
    g = np.maximum(np.asarray(sweep.gap), 1e-16)
    ax.loglog(w, g, "o-", base=2)
    ax.axhline(1e-4, color="0.5", ls="--", lw=1, label="1e-4")
    if sweep.n_rays <= w.max() * 4:
        ax.axvline(sweep.n_rays, color="green", ls=":", label=f"{sweep.n_rays} rays")
    ax.set(xlabel="width K", ylabel="relative gap to W(λ)", title="gap to the wide limit")
    ax.legend(fontsize=8)
    return ax.figure


def plot_rays_covered(sweep, *, ax=None):
    """Rays covered (an atom within cosine 1 − δ) against width, with the total number of rays."""
    ax = _axes(ax, (5, 3.8))
    w = np.asarray(sweep.widths)
    ax.plot(w, sweep.rays_covered, "o-", label="rays covered")
    ax.axhline(sweep.n_rays, color="green", ls=":", label=f"all {sweep.n_rays} rays")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="width K", ylabel="rays covered", title="splitting toward one atom per ray")
    ax.legend(fontsize=8)
    return ax.figure


def plot_split_tree(tree_or_sweep, *, ax=None):
    """The split tree across widths: one row per width, an atom per node, edges child → parent
    (width ∝ the child's share of its parent's code mass, colour = cosine to the parent)."""
    tree = getattr(tree_or_sweep, "tree", tree_or_sweep)
    ax = _axes(ax, (7, 0.6 + 0.55 * len(tree.widths)))
    pos = []
    for t, k in enumerate(tree.widths):
        order = np.arange(k)
        if t > 0:  # children under their parents
            px = pos[t - 1][np.maximum(tree.parents[t], 0)]
            px = np.where(tree.parents[t] >= 0, px, np.max(pos[t - 1]) + 1)
            order = np.lexsort((np.arange(k), px))
        x = np.empty(k)
        x[order] = np.linspace(0, 1, k) if k > 1 else [0.5]
        pos.append(x)
    cmap = plt.get_cmap("viridis")
    for t in range(1, len(tree.widths)):
        for c, p in enumerate(tree.parents[t]):
            if p < 0:
                continue
            s = tree.share[t][c]
            lw = 0.5 + 3 * (np.clip(s, 0, 1) if np.isfinite(s) else 0)
            col = (
                cmap(np.clip(tree.cosine[t][c], 0, 1)) if np.isfinite(tree.cosine[t][c]) else "0.5"
            )
            ax.plot([pos[t - 1][p], pos[t][c]], [t - 1, t], color=col, lw=lw)
    for t, x in enumerate(pos):
        ax.scatter(x, np.full(len(x), t), s=18, c="k", zorder=3)
    ax.set_yticks(range(len(tree.widths)), [f"K={k}" for k in tree.widths])
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set(
        title=f"split tree ({tree.method}); edge colour = cosine to parent, width = code-mass share"
    )
    return ax.figure
