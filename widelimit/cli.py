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

from ._core.atomic import atomic_write, atomic_write_bytes, write_json
from ._core.outputs import check_output_dir

app = typer.Typer(add_completion=False, help="widelimit: sparse dictionaries in the wide limit.")
console = Console()


def _fail(msg: str):
    Console(stderr=True).print(f"[red]error:[/red] {msg}", soft_wrap=True)
    raise typer.Exit(2)


STREAM_BYTES = 1 << 30  # a .npy/.safetensors file larger than this is streamed, not loaded


def streams(path: str) -> bool:
    """Whether DATA is read as an ``ActivationStore`` (blocks mapped from disk, memory about one
    block): a directory of shards, or a ``.npy``/``.safetensors`` file over ``STREAM_BYTES``."""
    if os.path.isdir(path):
        return True
    big = os.path.isfile(path) and os.path.getsize(path) > STREAM_BYTES
    return big and path.endswith((".npy", ".safetensors"))


def read_data(data: str, key: str | None, dt):
    """DATA as an ``ActivationStore`` when it ``streams``, else the loaded array in dtype ``dt``."""
    if not streams(data):
        return load_data(data, key).astype(dt)
    import widelimit as wl

    return _call(wl.ActivationStore, data, key=key)


def _data_for_minibatches(data: str, key: str | None, dt, batch_size: int | None):
    """``read_data`` for `fit` and `sweep`: streamed DATA needs --batch-size."""
    if streams(data) and batch_size is None:
        what = "a directory of shards" if os.path.isdir(data) else f"{data} (over 1 GiB)"
        _fail(f"{what} is streamed and fitted in minibatches: pass --batch-size")
    return read_data(data, key, dt)


def _mean_l0(codes) -> float:
    """Mean nonzeros per row of dense or sparse codes."""
    import widelimit as wl

    if isinstance(codes, wl.SparseCodes):
        return float(codes.nnz) / codes.shape[0]
    return float((np.asarray(codes) > 0).sum(1).mean())


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
    if X.dtype.kind not in "fiu":
        _fail(f"{path}: data must be real numbers, got dtype {X.dtype}")
    if X.size and not np.isfinite(X).all():
        _fail(f"{path}: data contains NaN or Inf")
    return X


DTYPES = {"float32": np.float32, "float64": np.float64}


def _compile_cache():
    """JAX's persistent compilation cache, so repeated runs skip XLA compilation (and, on GPUs, its
    autotuning: a width-1024 fit's first epoch fell from 66 s to 3.6 s on an H100). The directory is
    ``$WIDELIMIT_COMPILE_CACHE``, default ``~/.cache/widelimit/xla``; an empty value turns it off."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "widelimit", "xla")
    path = os.environ.get("WIDELIMIT_COMPILE_CACHE", default)
    if path:
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _setup(dtype: str, quiet: bool):
    if dtype not in DTYPES:
        _fail(f"--dtype must be float32 or float64, got {dtype!r}")
    _compile_cache()
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    console.quiet = quiet
    return DTYPES[dtype]


def _progress(quiet: bool) -> bool | None:
    """The library's ``progress=``: off with --quiet, else its default (a bar on a terminal)."""
    return False if quiet else None


def _closes_sentence(k: int | None) -> str:
    if k is None:
        return "The gap to the wide limit stays above 1e-4 at every width tried."
    return f"The gap to the wide limit closes (≤ 1e-4) at K = {k}."


def _check_lam(lam: float):
    if not (np.isfinite(lam) and lam > 0):
        _fail(f"--lam must be a finite number > 0, got {lam}")


def _call(f, *args, **kwargs):
    """Run a library call; its ValueError/TypeError becomes a one-line error (exit 2)."""
    try:
        return f(*args, **kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        _fail(str(e).splitlines()[0])


def _check_out(out: str | None, files=(), subdirs=()):
    """Refuse a bad output directory (exit 2) before any work: see ``check_output_dir``."""
    if out is not None:
        _call(check_output_dir, out, files, subdirs, name="-o")


def _save_fig(fig, path: str):
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)
    return path


SWEEP_FIGURES = ("loss.png", "gap.png", "rays_covered.png", "split_tree.png")


DtypeOpt = typer.Option("float32", "--dtype", help="float32 or float64")
SeedOpt = typer.Option(0, "--seed")
QuietOpt = typer.Option(False, "--quiet", is_flag=True, metavar="", help="print nothing but errors")
KeyOpt = typer.Option(None, "--key", help="array name inside .npz/.safetensors")


@app.command()
def wide(
    data: str,
    lam: float = typer.Option(..., "--lam"),
    key: str = KeyOpt,
    out: str = typer.Option(None, "-o", "--out"),
    dtype: str = DtypeOpt,
    quiet: bool = QuietOpt,
    as_json: bool = typer.Option(
        False, "--json", is_flag=True, metavar="", help="print the summary as JSON on stdout"
    ),
):
    """Solve the wide limit of DATA (a file, or a directory of .npy/.safetensors shards; a directory
    or a file over 1 GiB is streamed) and print the certified gap."""
    import widelimit as wl

    dt = _setup(dtype, quiet)
    _check_lam(lam)
    _check_out(out, ["wide.json"])
    X = read_data(data, key, dt)  # an activation cache or a large file: streamed, never loaded
    n_samples = X.shape[0] if isinstance(X, np.ndarray) else X.n_rows
    sol = _call(wl.solve_wide, X, lam)
    summary = {
        "objective": float(sol.objective),
        "dual_objective": float(sol.dual_objective),
        "gap": float(sol.gap),
        "steps": int(sol.num_steps),
        "encoded": int(sol.encoded.sum()),
        "n_samples": int(n_samples),
        "lam": lam,
    }
    if out:
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "wide.json"), summary)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        console.print(summary)


@app.command()
def fit(
    data: str,
    width: int = typer.Option(..., "--width"),
    lam: float = typer.Option(..., "--lam"),
    out: str = typer.Option(..., "-o", "--out"),
    key: str = KeyOpt,
    no_bias: bool = typer.Option(
        False, "--no-bias", is_flag=True, metavar="", help="fit without a bias (b = 0)"
    ),
    epochs: int = typer.Option(500, "--epochs"),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="a minibatch fit (needed for a directory of shards or a file over 1 GiB)",
    ),
    dtype: str = DtypeOpt,
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
):
    """Fit a width-K dictionary to DATA (a file, or a directory of .npy/.safetensors shards; a
    directory or a file over 1 GiB is streamed, with --batch-size), resumable: checkpoints in
    OUT/checkpoint."""
    import jax

    import widelimit as wl
    from widelimit._finite.fit_file import result_name

    dt = _setup(dtype, quiet)
    _check_lam(lam)
    if width < 1:
        _fail(f"--width must be ≥ 1, got {width}")
    _check_out(out, ["fit.npz", "fit.json"], ["checkpoint"])
    X = _data_for_minibatches(data, key, dt, batch_size)
    f = _call(
        wl.fit_dictionary, X, width, lam, key=jax.random.key(seed), fit_bias=not no_bias,
        max_epochs=epochs, checkpoint_dir=os.path.join(out, "checkpoint"), progress=_progress(quiet),
        batch_size=batch_size,
    )  # fmt: skip
    rep = _call(wl.check_optimality, X, f.atoms, f.codes, f.bias if not no_bias else None, lam)
    wl.save_fit(f, os.path.join(out, "fit.npz"))
    summary = {
        "width": width, "lam": lam, "loss": float(f.loss), "wide_bound": float(f.wide_bound),
        "result": result_name(f.result), "seconds": float(f.seconds),
        "code_kkt": float(f.code_kkt), "atom_stationarity": float(f.atom_stationarity),
        "gap": float(f.gap), "epochs": int(f.n_epochs), "resumed_from": int(f.resumed_from),
        "l0": _mean_l0(f.codes), "stationary": f.stationary(),
        "passed": bool(rep.passed),
        "violated_pairs": rep.violated_pairs[:20].tolist(),
    }  # fmt: skip
    write_json(os.path.join(out, "fit.json"), summary)
    status = {
        "successful": "converged",
        "max_steps_reached": f"stopped at --epochs {epochs} before converging",
        "nonfinite": "NOT FINITE",
        "stalled": "stalled short of the conditions",
        "out_of_range": "OUT OF RANGE",
    }[summary["result"]]
    console.print(
        f"K = {width}: L = {summary['loss']:.6g}, certified gap to the wide limit {summary['gap']:.3g}"
        f" ({status} after {summary['epochs']} epochs, {summary['seconds']:.1f} s)"
    )
    console.print(rep.summary(), markup=False, highlight=False)
    console.print(f"outputs: {os.path.abspath(out)}/fit.npz, fit.json")


def _sweep_figures(sweep, out: str) -> list[str]:
    from widelimit import plot

    draw = (plot.plot_sweep_loss, plot.plot_sweep_gap, plot.plot_rays_covered, plot.plot_split_tree)
    return [
        _save_fig(f(sweep), os.path.join(out, n)) for f, n in zip(draw, SWEEP_FIGURES, strict=True)
    ]


def _sweep_table(sweep):
    from rich.table import Table

    t = Table(title=f"width sweep, λ = {sweep.lam:.3g}, W(λ) = {sweep.wide_optimum:.6g}")
    for c in ("K", "loss", "gap", "rays", "L0", "dead", "hull viol."):
        t.add_column(c, justify="right")
    for i, k in enumerate(sweep.widths):
        t.add_row(
            str(k), f"{sweep.loss[i]:.6g}", f"{sweep.gap[i]:.2e}",
            f"{sweep.rays_covered[i]}/{sweep.n_rays}", f"{sweep.l0[i]:.2f}",
            str(sweep.dead[i]), str(sweep.hull_violations[i]),
        )  # fmt: skip
    return t


def _parse_widths(widths: str) -> list[int]:
    try:
        ws = [int(w) for w in widths.split(",") if w.strip()]
    except ValueError:
        _fail(f"--widths must be comma-separated integers, got {widths!r}")
    if not ws or any(w < 1 for w in ws) or any(b <= a for a, b in zip(ws, ws[1:], strict=False)):
        _fail(f"--widths must be strictly increasing positive integers, got {widths!r}")
    return ws


@app.command()
def sweep(
    data: str,
    widths: str = typer.Option(..., "--widths", help="e.g. 1,2,4,8"),
    lam: float = typer.Option(..., "--lam"),
    out: str = typer.Option(..., "-o", "--out"),
    key: str = KeyOpt,
    no_bias: bool = typer.Option(
        False, "--no-bias", is_flag=True, metavar="", help="fit without a bias (b = 0)"
    ),
    seeds: int = typer.Option(1, "--seeds"),
    epochs: int = typer.Option(500, "--epochs"),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="minibatch fits (needed for a directory of shards or a file over 1 GiB)",
    ),
    dtype: str = DtypeOpt,
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
):
    """Sweep widths on DATA (a file, or a directory of .npy/.safetensors shards; a directory or a
    file over 1 GiB is streamed, with --batch-size), each warm-started by splitting the last
    (resumable in OUT)."""
    import jax

    import widelimit as wl

    dt = _setup(dtype, quiet)
    _check_lam(lam)
    ws = _parse_widths(widths)
    _check_out(out, ["sweep.json", *SWEEP_FIGURES])
    X = _data_for_minibatches(data, key, dt, batch_size)
    s = _call(
        wl.width_sweep, X, ws, lam, key=jax.random.key(seed), fit_bias=not no_bias, n_seeds=seeds,
        out_dir=out, max_epochs=epochs, progress=_progress(quiet), batch_size=batch_size,
    )  # fmt: skip
    figs = _sweep_figures(s, out)
    console.print(_sweep_table(s))
    console.print(f"{_closes_sentence(s.closes_at())} Outputs: {os.path.abspath(out)}")
    for f in figs:
        console.print(f"  {f}")


@app.command()
def train(
    data: str,
    width: int = typer.Option(..., "--width"),
    out: str = typer.Option(..., "-o", "--out"),
    arch: str = typer.Option(
        "standard",
        "--arch",
        help="standard, topk, abstopk, batchtopk, matryoshka_batchtopk, jumprelu or gated",
    ),
    lam: float = typer.Option(None, "--lam", help="L1 (standard, gated) or L0 (jumprelu) weight"),
    k: float = typer.Option(None, "--k", help="codes per row (topk, batchtopk, matryoshka)"),
    steps: int = typer.Option(2000, "--steps"),
    batch_size: int = typer.Option(256, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate"),
    every: int = typer.Option(500, "--checkpoint-every", help="steps between checkpoints"),
    key: str = KeyOpt,
    dtype: str = DtypeOpt,
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
):
    """Train an SAE on DATA and write it as a SAELens directory OUT/sae (resumable: checkpoints in
    OUT/checkpoint every --checkpoint-every steps)."""
    import jax

    import widelimit as wl
    from widelimit._finite.fit_file import result_name

    dt = _setup(dtype, quiet)
    if lam is not None:
        _check_lam(lam)
    for name, v in (("--width", width), ("--steps", steps), ("--batch-size", batch_size),
                    ("--checkpoint-every", every)):  # fmt: skip
        if v < 1:
            _fail(f"{name} must be ≥ 1, got {v}")
    _check_out(out, ["train.json"], ["checkpoint", "sae"])
    X = load_data(data, key).astype(dt)
    r = _call(
        wl.train_sae, X, width, lam, key=jax.random.key(seed), architecture=arch, k=k, steps=steps,
        batch_size=batch_size, learning_rate=lr, checkpoint_dir=os.path.join(out, "checkpoint"),
        checkpoint_every=every, progress=_progress(quiet),
    )  # fmt: skip
    status = result_name(r.result)
    if status != "successful":
        _fail(f"training stopped: {wl.RESULTS[r.result]}")
    _call(wl.save_saelens, r.sae, os.path.join(out, "sae"))
    tail = np.asarray(r.losses[-min(100, steps) :])
    summary = {
        "architecture": r.sae.architecture, "width": width, "steps": steps, "result": status,
        "final_loss": float(tail.mean()), "resumed_from": int(r.resumed_from),
        "seconds": float(r.seconds), "losses": np.asarray(r.losses).tolist(),
    }  # fmt: skip
    write_json(os.path.join(out, "train.json"), summary)
    console.print(
        f"{summary['architecture']} SAE, K = {width}: loss {summary['final_loss']:.6g} (mean of the "
        f"last {len(tail)} steps) after {steps} steps, {summary['seconds']:.1f} s"
        + (f", resumed at step {r.resumed_from}" if r.resumed_from else "")
    )
    console.print(f"outputs: {os.path.abspath(out)}/sae, train.json")


def _load_model(target: str):
    """(atoms, bias, SAE or None) from a fit dir, sweep dir, fit .npz or SAELens dir/weights file."""
    import widelimit as wl

    if not os.path.exists(target):
        _fail(f"no such file or directory: {target}")
    if os.path.isdir(target):
        if os.path.exists(os.path.join(target, "cfg.json")):
            sae = _call(wl.load_saelens, target)
            return sae.W_dec, sae.b_dec, sae
        if os.path.exists(os.path.join(target, "fit.npz")):
            target = os.path.join(target, "fit.npz")
        else:
            s = _call(wl.load_sweep, target)
            f = s.fits[-1]
            return f.atoms, (f.bias if f.fit_bias else None), None
    if target.endswith(".safetensors"):
        sae = _call(wl.load_saelens, target)
        return sae.W_dec, sae.b_dec, sae
    if target.endswith(".npz"):
        f = _call(wl.load_fit, target)
        return f.atoms, (f.bias if f.fit_bias else None), None
    _fail(f"unsupported model: {target} (a fit/sweep directory, fit .npz or SAELens directory)")


@app.command()
def check(
    model: str,
    data: str,
    lam: float = typer.Option(None, "--lam", help="λ (an SAE: default the λ its codes imply)"),
    key: str = KeyOpt,
    out: str = typer.Option(None, "-o", "--out", help="write check.json and report.png here"),
    dtype: str = DtypeOpt,
    quiet: bool = QuietOpt,
):
    """Check the optimality conditions of a fit, sweep (largest width) or SAELens SAE on DATA."""
    import jax.numpy as jnp

    import widelimit as wl

    dt = _setup(dtype, quiet)
    _check_out(out, ["check.json", "report.png"])
    atoms, bias, sae = _load_model(model)
    if lam is not None or sae is None:
        if lam is None:
            _fail("--lam is needed to check a dictionary")
        _check_lam(lam)
    X = load_data(data, key).astype(dt)
    if X.shape[1] != atoms.shape[1]:
        _fail(f"{data} has {X.shape[1]} features but the model has {atoms.shape[1]}")
    if sae is not None:
        srep = _call(wl.check_sae, sae, jnp.asarray(X, sae.W_dec.dtype), lam)
        console.print(srep.summary(), markup=False, highlight=False)
        rep, record = srep.dictionary, srep.to_json()
    else:
        atoms = jnp.asarray(atoms, dt)
        bias = None if bias is None else jnp.asarray(bias, dt)
        codes = _call(wl.encode, atoms, bias, X, lam)
        rep = _call(wl.check_optimality, X, atoms, codes, bias, lam, normalise=True)
        console.print(rep.summary(), markup=False, highlight=False)
        record = {"architecture": "dictionary", "lam": lam, "passed": bool(rep.passed),
                  "code_kkt_max": float(rep.code_kkt_max),
                  "atom_stationarity_max": float(rep.atom_stationarity.max()),
                  "bias_residual": float(rep.bias_residual),
                  "wide_certificate": float(rep.wide_certificate),
                  "n_violated_pairs": len(rep.violated_pairs)}  # fmt: skip
    if out:
        from widelimit.plot import plot_report

        os.makedirs(out, exist_ok=True)
        record["violated_pairs"] = rep.violated_pairs[:100].tolist()
        write_json(os.path.join(out, "check.json"), record)
        _save_fig(plot_report(rep), os.path.join(out, "report.png"))
        console.print(f"outputs: {os.path.abspath(out)}/check.json, report.png")


@app.command()
def plot(sweep_dir: str, quiet: bool = QuietOpt):
    """Redraw the figures of a sweep directory (loss, gap, rays covered, split tree)."""
    import widelimit as wl

    _setup("float32", quiet)
    if not os.path.isdir(sweep_dir):
        _fail(f"no such directory: {sweep_dir}")
    _check_out(sweep_dir, SWEEP_FIGURES)
    s = _call(wl.load_sweep, sweep_dir)
    for f in _sweep_figures(s, sweep_dir):
        console.print(f)


@app.command()
def demo(
    out: str = typer.Option("demo-output", "-o", "--out"),
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
):
    """Sweep widths on a bundled toy set (a dog/labrador hierarchy plus 4 rays, no bias): the gap
    to the wide limit closes at one atom per ray, and the hierarchical arrangement is flagged."""
    import jax
    import jax.numpy as jnp

    import widelimit as wl
    from widelimit import plot

    _setup("float32", quiet)
    _check_out(
        out, ["demo.json", "toy_data.npy", *SWEEP_FIGURES, "hierarchy_pair_hull.png",
              "hierarchy_report.png", "hull_panels.png"], ["sweep"],
    )  # fmt: skip
    key = jax.random.key(seed)
    toy = wl.datasets.hierarchy_plus_rays(key, n_samples=800, n_rays=4, n_features=8)
    X, lam = np.asarray(toy.X), 0.2
    n_rays = int(toy.rays.shape[0])
    os.makedirs(out, exist_ok=True)
    atomic_write_bytes(os.path.join(out, "toy_data.npy"), lambda f: np.save(f, X))
    console.print(
        f"toy data: {len(X)} points on {n_rays} rays (dog, dog+labrador, 4 plain rays), λ = {lam}"
    )
    s = wl.width_sweep(
        X, list(range(1, n_rays + 3)), lam, key=key, fit_bias=False, out_dir=os.path.join(out, "sweep"),
        ground_truth=toy, progress=_progress(quiet),
    )  # fmt: skip
    figs = _sweep_figures(s, out)
    # the hierarchical arrangement: atoms at the true dog and labrador directions, exact codes
    D = jnp.asarray(toy.atoms)
    Z = wl.encode(D, None, X, lam)
    rep = wl.check_optimality(X, D, Z, None, lam)
    pair = wl.pair_hull(Z, 0, 1, atoms=D, fit_bias=False)
    figs.append(_save_fig(plot.plot_pair_hull(pair), os.path.join(out, "hierarchy_pair_hull.png")))
    figs.append(_save_fig(plot.plot_report(rep), os.path.join(out, "hierarchy_report.png")))
    panels = wl.datasets.hull_panels(key)
    figs.append(_save_fig(plot.plot_hull_panels(panels), os.path.join(out, "hull_panels.png")))
    closes = s.closes_at()
    flagged = [0, 1] in rep.violated_pairs.tolist()
    summary = {
        "n_rays": n_rays, "lam": lam, "gap_closes_at": closes, "sweep": s.to_dict(),
        "hierarchy_pair_flagged": flagged, "hierarchy_violated_pairs": rep.violated_pairs.tolist(),
        "figures": figs,
    }  # fmt: skip
    write_json(os.path.join(out, "demo.json"), summary)
    console.print(_sweep_table(s))
    console.print(f"{_closes_sentence(closes)} (The data has {n_rays} rays.)")
    console.print(
        "the hierarchical arrangement (dog, labrador) is "
        + ("[bold red]flagged unstable[/bold red]" if flagged else "NOT flagged")
        + f": labrador's hull while dog is off is [{float(pair.lo):.2g}, {float(pair.hi):.2g}] ∌ "
        f"target {float(pair.target):.3g}"
    )
    console.print(f"outputs in {os.path.abspath(out)}:")
    for f in [os.path.join(out, "demo.json"), *figs]:
        console.print(f"  {f}")


def main():  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
