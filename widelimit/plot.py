"""Figures (optional layer: needs matplotlib; the core never imports this module)."""

from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend() if matplotlib.get_backend() else "Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_wide(X, sol, *, ax=None, dims=(0, 1)):
    """Scatter the data (first two features, or ``dims``), encoded points coloured by their code
    ‖m_n‖, unencoded points grey, the bias b as a star and the λ-ball around it."""
    X = np.asarray(X)
    i, j = dims if X.shape[1] > 1 else (0, 0)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
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
    (fig or ax.figure).colorbar(sc, ax=ax, label="code ‖m_n‖")
    ax.legend(loc="best", fontsize=7)
    return fig or ax.figure
