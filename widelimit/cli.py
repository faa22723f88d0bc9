"""Command line (optional layer: ``pip install widelimit[cli]``)."""

from __future__ import annotations

import json
import os
import sys

try:
    import typer
    from rich.console import Console
except ImportError as e:  # pragma: no cover
    raise SystemExit("the widelimit CLI needs the 'cli' extra: pip install 'widelimit[cli]'") from e

import numpy as np

app = typer.Typer(add_completion=False, help="widelimit: sparse dictionaries in the wide limit.")
console = Console()


def _fail(msg: str):
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def load_data(path: str, key: str | None = None) -> np.ndarray:
    """Load DATA from .npy, .npz (with ``key``) or .safetensors; one-line errors on bad files."""
    if not os.path.exists(path):
        _fail(f"no such file: {path}")
    try:
        if path.endswith(".npy"):
            X = np.load(path, allow_pickle=False)
        elif path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                names = list(z.keys())
                if key is None and len(names) != 1:
                    _fail(f"{path} holds {names}; choose one with --key")
                X = z[key or names[0]]
        elif path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            t = load_file(path)
            if key is None and len(t) != 1:
                _fail(f"{path} holds {sorted(t)}; choose one with --key")
            X = t[key or next(iter(t))]
        else:
            _fail(f"unsupported file type: {path} (use .npy, .npz or .safetensors)")
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        _fail(f"cannot read {path}: {e}")
    if X.ndim != 2:
        _fail(f"{path}: data must be 2-D (n_samples, n_features), got shape {X.shape}")
    return X


@app.command()
def wide(
    data: str,
    lam: float = typer.Option(..., "--lam"),
    key: str = typer.Option(None, "--key"),
    out: str = typer.Option(None, "-o", "--out"),
    quiet: bool = typer.Option(False, "--quiet"),
):
    """Solve the wide limit of DATA and print the certified gap."""
    import widelimit as wl

    X = load_data(data, key)
    try:
        sol = wl.solve_wide(X, lam)
    except (ValueError, TypeError, RuntimeError) as e:
        _fail(str(e))
    summary = {
        "objective": float(sol.objective),
        "dual_objective": float(sol.dual_objective),
        "gap": float(sol.gap),
        "steps": int(sol.num_steps),
        "encoded": int(sol.encoded.sum()),
        "n_samples": int(X.shape[0]),
        "lam": lam,
    }
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "wide.json"), "w") as f:
            json.dump(summary, f, indent=1)
    if not quiet:
        console.print(summary)


@app.command()
def demo(
    out: str = typer.Option("demo-output", "-o", "--out"), seed: int = typer.Option(0, "--seed")
):
    """Solve the wide limit of a bundled toy set and save a figure of b and the encoded points."""
    import widelimit as wl
    from widelimit.plot import plot_wide

    r = np.random.default_rng(seed)
    n_rays = 5
    V = r.normal(size=(n_rays, 2))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    b_true = np.array([1.0, -0.5])
    X = b_true + V[r.integers(0, n_rays, 800)] * r.lognormal(0, 0.6, (800, 1))
    X += 0.05 * r.normal(size=X.shape)
    lam = 0.4
    sol = wl.solve_wide(X.astype(np.float32), lam)
    os.makedirs(out, exist_ok=True)
    fig = plot_wide(X, sol)
    fig.savefig(os.path.join(out, "wide_limit.png"), dpi=130)
    summary = {
        "objective": float(sol.objective),
        "dual_objective": float(sol.dual_objective),
        "certified_relative_gap": float(sol.gap),
        "bias": np.asarray(sol.bias).tolist(),
        "encoded_points": int(sol.encoded.sum()),
        "n_samples": len(X),
        "lam": lam,
    }
    with open(os.path.join(out, "wide_limit.json"), "w") as f:
        json.dump(summary, f, indent=1)
    console.print(f"wide limit of {len(X)} points on {n_rays} rays, λ = {lam}")
    console.print(
        f"  W(λ) = {summary['objective']:.6g}, certified relative gap = {summary['certified_relative_gap']:.2e}"
    )
    console.print(
        f"  bias b = {np.round(summary['bias'], 4).tolist()}, {summary['encoded_points']} points encoded"
    )
    console.print(f"outputs: {os.path.abspath(out)}/wide_limit.png, wide_limit.json")


def main():  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
