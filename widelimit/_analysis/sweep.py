"""Width sweeps (SPEC §5): L(K) against the wide optimum W(λ) as dictionaries split toward one atom
per data ray.

Each width K_t is warm-started by splitting the best fit at K_{t−1} (``grow``); per width the
sweep records the loss, the certified gap (L − W_low)/|W_low| (W_low: the dual value of the wide
solve), L0, dead atoms, optimality-condition violations of each kind, and the rays covered (a ray
is covered when some atom has cosine ≥ 1 − δ with it). With ``out_dir`` every finished width is
written atomically (fit ``width-K.npz``, record ``width-K.json``, then ``sweep.json``), and a rerun
skips the finished widths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, Int, PRNGKeyArray

from .._core import checkpoint
from .._core.atomic import write_json
from .._core.code_store import code_usage
from .._core.compile_clock import compile_seconds
from .._core.lock import dir_lock
from .._core.objective import relative_gap
from .._core.precision import full_precision
from .._core.progress import Progress
from .._core.store import as_store, is_store_like
from .._core.validate import check_lam, check_matrix, check_positive_int
from .._finite.atoms import normalise_rows
from .._finite.codes import encode
from .._finite.fit import DictionaryFit, fit_dictionary
from .._finite.fit_file import load_fit, save_fit
from .._finite.seeds import fit_dictionary_seeds
from .._finite.solver import DictionarySolver, solver_of
from .._finite.split import grow
from .._wide.solve import solve_wide
from .conditions import check_optimality
from .split_tree import SplitTree, split_tree

_MANIFEST = "sweep-manifest.json"
_RECORD_KEYS = (
    "loss",
    "gap",
    "rays_covered",
    "l0",
    "dead",
    "code_violations",
    "atom_violations",
    "bias_violation",
    "hull_violations",
    "wants_new_atom",
    "epochs",
    "seconds",
    "compile_seconds",
)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Per-width arrays (``widths`` order), the wide optimum, the best fit per width and its tree."""

    widths: Int[np.ndarray, " n_widths"]
    loss: Float[np.ndarray, " n_widths"]
    gap: Float[np.ndarray, " n_widths"]
    rays_covered: Int[np.ndarray, " n_widths"]
    l0: Float[np.ndarray, " n_widths"]
    dead: Int[np.ndarray, " n_widths"]
    code_violations: Int[np.ndarray, " n_widths"]
    atom_violations: Int[np.ndarray, " n_widths"]
    bias_violation: Int[np.ndarray, " n_widths"]
    hull_violations: Int[np.ndarray, " n_widths"]
    wants_new_atom: Int[np.ndarray, " n_widths"]
    epochs: Int[np.ndarray, " n_widths"]
    seconds: Float[np.ndarray, " n_widths"]
    compile_seconds: Float[np.ndarray, " n_widths"]
    seed_loss: Float[np.ndarray, "n_widths n_seeds"]
    n_rays: int
    wide_optimum: float
    wide_bound: float
    lam: float
    fits: list[DictionaryFit]
    tree: SplitTree

    def closes_at(self, rtol: float = 1e-4) -> int | None:
        """The first width whose certified gap is ≤ rtol (None if none)."""
        hit = np.flatnonzero(self.gap <= rtol)
        return int(self.widths[hit[0]]) if len(hit) else None

    def to_dict(self) -> dict:
        out = {k: np.asarray(getattr(self, k)).tolist() for k in ("widths", *_RECORD_KEYS)}
        out |= {
            "seed_loss": np.asarray(self.seed_loss).tolist(),
            "n_rays": self.n_rays,
            "wide_optimum": self.wide_optimum,
            "wide_bound": self.wide_bound,
            "lam": self.lam,
            "splits": self.tree.splits(),
        }
        return out


def _check_widths(widths) -> list[int]:
    try:
        ws = [int(w) for w in widths]
    except (TypeError, ValueError) as e:
        raise ValueError(f"`widths` must be a list of positive integers, got {widths!r}") from e
    if (
        not ws
        or any(w < 1 for w in ws)
        or any(np.diff(ws) <= 0)
        or any(int(w) != w for w in widths)
    ):
        raise ValueError(f"`widths` must be strictly increasing positive integers, got {widths!r}")
    return ws


def _rays_of(ground_truth, d, dtype):
    if ground_truth is None:
        return None
    g = getattr(ground_truth, "rays", ground_truth)
    if g is None:
        raise ValueError("`ground_truth` has no ray directions (its data does not lie on rays)")
    g = check_matrix(g, "ground_truth").astype(dtype)
    if g.shape[1] != d:
        raise ValueError(f"`ground_truth` rays have {g.shape[1]} features but `X` has {d}")
    return g / jnp.linalg.norm(g, axis=1, keepdims=True)


def covered(rays, atoms, delta: float) -> int:
    """Number of rays with some atom at cosine ≥ 1 − δ."""
    return int(_covered(rays, atoms, delta))


@jax.jit
def _covered(rays, atoms, delta):
    D = atoms / jnp.linalg.norm(atoms, axis=1, keepdims=True)
    return jnp.sum(jnp.max(rays @ D.T, axis=1) >= 1 - delta)


def _record(fit, X, lam, rays, delta, tol, seed_loss, wide_bound):
    rep = check_optimality(
        X, fit.atoms, fit.codes, fit.bias if fit.fit_bias else None, lam, tol=tol
    )
    loss = float(fit.loss)
    l0, mass = code_usage(fit.codes)  # dense or sparse codes
    return {
        "width": int(fit.atoms.shape[0]),
        "loss": loss,
        "gap": float(relative_gap(loss - wide_bound, wide_bound)),
        "rays_covered": covered(rays, fit.atoms, delta),
        "l0": l0,
        "dead": int(np.sum(mass == 0)),
        "code_violations": int(jnp.sum(rep.code_kkt_per_atom > tol)),
        "atom_violations": int(jnp.sum(rep.atom_stationarity > tol)),
        "bias_violation": int(fit.fit_bias and float(rep.bias_residual) > tol),
        "hull_violations": len(rep.violated_pairs),
        "wants_new_atom": int(rep.wants_new_atom.sum()),
        "seed_loss": seed_loss,
    }


def _on_rows(fit, X, lam):
    """``fit`` with exact dense codes for the rows X (a store sweep grows from a row sample)."""
    Z = encode(fit.atoms, fit.bias if fit.fit_bias else None, X, lam)
    return eqx.tree_at(lambda f: f.codes, fit, Z)


def _assemble(records, fits, n_rays, wide_optimum, wide_bound, lam) -> Sweep:
    # records written before epochs/seconds were kept read as NaN
    arr = {k: np.asarray([r.get(k, np.nan) for r in records]) for k in _RECORD_KEYS}
    widths = np.asarray([r["width"] for r in records])
    seed_loss = np.asarray([r["seed_loss"] for r in records], dtype=float).reshape(len(records), -1)
    tree = split_tree(
        [f.atoms for f in fits], [f.codes for f in fits], [np.asarray(f.parents) for f in fits]
    )
    return Sweep(
        widths, seed_loss=seed_loss, n_rays=n_rays, wide_optimum=wide_optimum,
        wide_bound=wide_bound, lam=lam, fits=fits, tree=tree, **arr,
    )  # fmt: skip


@full_precision
def width_sweep(
    X: Float[ArrayLike, "n_samples n_features"],
    widths,
    lam: float,
    *,
    key: PRNGKeyArray,
    solver: DictionarySolver | None = None,
    n_seeds: int = 1,
    out_dir: str | None = None,
    ground_truth=None,
    progress: bool | None = None,
    cover_delta: float = 1e-2,
    check_tol: float = 1e-3,
    batch_seeds: bool = True,
    sample_rows: int = 16384,
    block_rows: int | None = None,
    **options,
) -> Sweep:
    """Fit every width in ``widths`` (increasing), each warm-started by splitting the previous one.

    ``n_seeds`` split/initialisation keys per width are fitted together in one vmapped program
    (``batch_seeds=False``, or a minibatch ``batch_size``: one after another) and the lowest loss
    kept. Every width is fitted by ``solver`` (a ``DictionarySolver``, or one built from keyword
    ``options`` as in ``fit_dictionary``). ``ground_truth`` (ray
    directions (R, d), or a ``datasets.ToyData``) defines the rays to cover; without it, the rays
    are the wide solution's encoded data rays.

    Out of core: X may be an ``ActivationStore`` (or anything it reads) with a minibatch
    ``batch_size``. Each width is then a streamed fit with sparse codes (``block_rows`` rows a
    block, as in ``fit_dictionary``), its record is computed block by block, and ``grow`` and the
    rays to cover use the first ``sample_rows`` rows, with codes encoded exactly for them;
    ``n_rays`` counts the encoded rays of every row. Each width's sparse codes are held in memory
    (and saved in ``out_dir``).
    """
    solver = solver_of(solver, options)
    fit_bias = solver.fit_bias
    store = as_store(X) if is_store_like(X) else None
    if store is not None:
        if solver.batch_size is None:
            raise ValueError("a store is swept in minibatches: pass batch_size=...")
        if store.n_rows is None:
            raise ValueError("width_sweep needs a store of known length (not an iterable)")
        sample_rows = check_positive_int(sample_rows, "sample_rows")
        Xs = check_matrix(np.asarray(next(store.pools(min(store.n_rows, sample_rows)))), "X")
        d = store.n_features
    else:
        X = Xs = check_matrix(X, "X")
        d = X.shape[1]
    ws = _check_widths(widths)
    lam = check_lam(lam, Xs.dtype)
    n_seeds = check_positive_int(n_seeds, "n_seeds")
    rays = _rays_of(ground_truth, d, Xs.dtype)
    fp = None  # only a resumable sweep (``out_dir``) needs it: a SHA-256 of every byte of X
    if out_dir is not None:
        source = {} if store is None else {"source": store.fingerprint(), "sample_rows": len(Xs)}
        fp = checkpoint.fingerprint(
            Xs, key=key, **source, lam=float(lam), n_seeds=n_seeds, max_epochs=solver.max_epochs,
            tol=float(solver.tol), loss_tol=float(solver.loss_tol),
            stop=solver.stop_rule, batch_seeds=bool(batch_seeds), cover_delta=float(cover_delta),
            check_tol=float(check_tol), ground_truth=None if rays is None else np.asarray(rays),
            **solver.fingerprint(),
        )  # fmt: skip
    with dir_lock(out_dir):  # after validation: a bad call creates nothing
        if out_dir is not None:
            checkpoint.check_manifest(os.path.join(out_dir, _MANIFEST), fp)
        wide = solve_wide(X, lam, fit_bias=fit_bias, throw=False)
        wide_bound = float(wide.dual_objective)
        if rays is None and store is None:
            rays = wide.atoms(X)[wide.encoded]
            n_rays = int(rays.shape[0])
        elif rays is None:  # every row's encoded rays; the sample rows' directions to cover
            n_rays = int(np.sum(np.asarray(wide.encoded)))
            rays = normalise_rows((Xs - wide.bias)[np.asarray(wide.encoded)[: len(Xs)]])
        else:
            n_rays = int(rays.shape[0])
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            write_json(
                os.path.join(out_dir, _MANIFEST),
                {"fingerprint": fp, "wide_optimum": float(wide.objective), "wide_bound": wide_bound,
                 "lam": float(lam), "n_rays": n_rays},
            )  # fmt: skip
        bar = Progress(len(ws), "width_sweep", progress)
        records, fits = [], []
        prev = None
        for t, k in enumerate(ws):
            rec_path = None if out_dir is None else os.path.join(out_dir, f"width-{k}.json")
            fit_path = None if out_dir is None else os.path.join(out_dir, f"width-{k}.npz")
            stored = _load_width(rec_path, fit_path, k)
            if stored is not None:
                rec, best = stored
            else:
                clock = (time.perf_counter(), compile_seconds())

                def within(e, loss, t=t, k=k):  # progress within a width: its epochs
                    bar.update(t, K=k, epoch=e, loss=float(loss))

                keys = [jax.random.fold_in(jax.random.fold_in(key, k), s) for s in range(n_seeds)]
                if prev is not None and store is not None:
                    prev = _on_rows(prev, Xs, lam)  # the sample rows' codes, once for all seeds
                grown = (
                    None
                    if prev is None
                    else [grow(prev, Xs, k, key=jax.random.fold_in(sk, 7)) for sk in keys]
                )
                b0 = prev.bias if (prev is not None and fit_bias) else None
                if n_seeds > 1 and batch_seeds and solver.batch_size is None:
                    fits_k = fit_dictionary_seeds(
                        X, k, lam, keys=jnp.stack(keys), solver=solver, init_bias=b0,
                        callback=lambda e, losses: within(e, np.min(losses)),
                        inits=None if grown is None else jnp.stack([g.atoms for g in grown]),
                        parents=None if grown is None else jnp.stack([g.parents for g in grown]),
                    )  # fmt: skip
                else:
                    fits_k = [
                        fit_dictionary(
                            X,
                            k,
                            lam,
                            key=sk,
                            solver=solver,
                            progress=False,
                            callback=lambda e, h: within(e, h["loss"][-1]),
                            init_bias=b0,
                            init=None if grown is None else grown[s].atoms,
                            parents=None if grown is None else grown[s].parents,
                            **({} if store is None else {"block_rows": block_rows}),
                        )  # fmt: skip
                        for s, sk in enumerate(keys)
                    ]
                seed_loss = [float(f.loss) for f in fits_k]
                best = fits_k[int(np.argmin(seed_loss))]
                rec = _record(best, X, lam, rays, cover_delta, check_tol, seed_loss, wide_bound)
                rec |= {
                    "epochs": int(best.n_epochs),
                    "seconds": time.perf_counter() - clock[0],
                    "compile_seconds": compile_seconds() - clock[1],
                }
                if out_dir is not None:
                    save_fit(best, fit_path)
                    write_json(rec_path, rec)
            records.append(rec)
            fits.append(best)
            prev = best
            bar.update(t + 1, K=k, gap=rec["gap"])
            if out_dir is not None:
                sweep = _assemble(
                    records, fits, n_rays, float(wide.objective), wide_bound, float(lam)
                )
                write_json(os.path.join(out_dir, "sweep.json"), sweep.to_dict())
        bar.close()
        return _assemble(records, fits, n_rays, float(wide.objective), wide_bound, float(lam))


def _load_width(rec_path, fit_path, k):
    """(record, fit) of a finished width, or None when it is absent or unreadable (a file damaged
    outside widelimit, whose own writes are atomic): that width is then fitted again, with a
    warning, instead of stopping the sweep."""
    if rec_path is None or not (os.path.exists(rec_path) and os.path.exists(fit_path)):
        return None
    try:
        with open(rec_path) as f:
            rec = json.load(f)
        return rec, load_fit(fit_path)
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        warnings.warn(f"width {k}: {e}; fitting it again", stacklevel=3)
        return None


def load_sweep(out_dir: str) -> Sweep:
    """The finished widths of a sweep directory written by ``width_sweep`` (no data needed)."""
    mpath = os.path.join(out_dir, _MANIFEST)
    if not os.path.exists(mpath):
        raise ValueError(f"{out_dir!r} is not a sweep directory (no {_MANIFEST})")
    try:
        with open(mpath) as f:
            m = json.load(f)
        names = [f for f in os.listdir(out_dir) if f.startswith("width-") and f.endswith(".json")]
        ks = sorted(int(f[6:-5]) for f in names)
        records = []
        for k in ks:
            with open(os.path.join(out_dir, f"width-{k}.json")) as f:
                records.append(json.load(f))
    except (OSError, json.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{out_dir!r} holds a corrupt sweep: {e}") from e
    ks = [k for k in ks if os.path.exists(os.path.join(out_dir, f"width-{k}.npz"))]
    records = [r for r in records if r["width"] in ks]
    if not records:
        raise ValueError(f"{out_dir!r} holds no finished widths")
    fits = [load_fit(os.path.join(out_dir, f"width-{k}.npz")) for k in ks]
    return _assemble(records, fits, m["n_rays"], m["wide_optimum"], m["wide_bound"], m["lam"])
