"""Working-set sizes mid-fit (issue 18: no recompilation when they change): the rules a fit sizes
its code solve's first tier and its code Gram by (``epochs._first_tier``, ``sparse_gram_support``)
against the baseline, the rules before: the first tier grown as soon as 1.25·q90 of the supports
+ 2 exceeds it (a second compile of the epoch), and the code Gram summed sparsely at K ≥ 2048
whatever the supports.

(a) Fits: N rows of sparse-coded data (``_common.sparse_coded``, d = 384, about 30 atoms a row)
and of real activations (``datasets.activations``), λ = 0.05, 0.1 and 0.25 × the median distance
to the mean, K = 128, 512 and 2048, 25 epochs of ``stop="loss"``; each fit in a fresh process
(compilation included), the baseline's and the rules' one after the other in the same run.
Recorded: seconds, the final loss, and the tiers the epochs ran (each set one compile of the
epoch's code program).
(b) Streamed fits (``fit_dictionary(store, …, batch_size=1000)``, 3 epochs), whose working sets
are fixed at their start: from the guessed supports of the first codes as a fit in memory starts
(``first_tiers``: 1.25·q95 + 2) against the baseline, the rule before (twice what the largest
guessed support needs, at most 64 atoms), on real activations (N = 8000, K = 512 and 2048, λ =
0.05 and 0.25 × the median distance), each in a fresh process.
(c) The code Gram alone, the dense product and ``sparse_code_gram``, at N = 4000 rows of s nonzeros (random), warm.

Writes ``benchmarks/results/working_sets.json``.

    python benchmarks/working_sets.py            # N = 4000, 18 fits per rule; (b) 4 per rule
    python benchmarks/working_sets.py --quick    # N = 1500, 2 fits per rule; (b) 1 per rule
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
from _common import SMOKE, sparse_coded, timeit, write  # noqa: E402


def _baseline_rules():
    """The rules before, patched in (this process only)."""
    import widelimit._finite.atoms as atoms
    import widelimit._finite.epochs as epochs

    def support(s, k):
        return s if s is not None and k >= 2048 and s < k else None

    atoms.sparse_gram_support = epochs.sparse_gram_support = support
    epochs._first_tier = lambda old, need, supports: epochs._keep(old, need)


def _baseline_streamed_tiers():
    """The streamed fit's rule before, patched in (this process only)."""
    import widelimit._finite.stream_fit as stream_fit
    from widelimit._finite.codes import bucket_size, tier_pair

    def tiers(width, init, guess):
        if width <= 64:
            return None
        need = bucket_size(max(16, int(2 * (1.25 * np.max(guess()) + 2))))
        return tier_pair(min(64, need), min(width, 256))

    stream_fit.code_tiers = tiers


def one_stream_fit(frac, n, k, epochs, rule):
    """(b): one streamed fit in this (fresh) process; prints its record as JSON."""
    import jax

    import widelimit as wl
    import widelimit._finite.stream_fit as stream_fit

    if rule == "baseline":
        _baseline_streamed_tiers()
    X = np.asarray(wl.datasets.activations(n).X)
    lam = frac * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    tiers = set()
    block = stream_fit._block

    def spy(cfg, *args, **kwargs):
        tiers.add(tuple(cfg.ws or ()))
        return block(cfg, *args, **kwargs)

    stream_fit._block = spy
    t = time.perf_counter()
    fit = wl.fit_dictionary(
        wl.ActivationStore(X), k, lam, key=jax.random.key(0), batch_size=min(1000, n // 2),
        max_epochs=epochs, progress=False,
    )  # fmt: skip
    rec = {"seconds": time.perf_counter() - t, "loss": float(fit.loss), "tiers": sorted(tiers)}
    print(json.dumps(rec))


def one_fit(data, frac, n, k, epochs, rule):
    """One fit in this (fresh) process; prints its record as JSON."""
    import jax

    import widelimit as wl
    import widelimit._finite.epochs as E
    import widelimit._finite.solver as S

    if rule == "baseline":
        _baseline_rules()
    X = sparse_coded(n, 384, seed=3) if data == "sparse_coded" else wl.datasets.activations(n).X
    X = np.asarray(X)
    lam = frac * float(np.median(np.linalg.norm(X - X.mean(0), axis=1)))
    tiers = []
    sized = E._with_working_set

    def spy(cfg, supports, k, epoch, guess=None):
        out = sized(cfg, supports, k, epoch, guess)
        if not tiers or tiers[-1][1] != list(out.ws or ()):
            tiers.append((epoch, list(out.ws or ())))
        return out

    S._with_working_set = spy
    t = time.perf_counter()
    fit = wl.fit_dictionary(
        X, k, lam, key=jax.random.key(0), max_epochs=epochs, stop="loss", progress=False
    )
    rec = {"seconds": time.perf_counter() - t, "loss": float(fit.loss), "tiers": tiers}
    print(json.dumps(rec))


def fresh(*args, flag="--one"):
    out = subprocess.run(
        [sys.executable, __file__, flag, *map(str, args)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def code_gram_times(n, cases):
    """(b): warm seconds of ``code_gram`` dense and sparse at N = n, per (K, s)."""
    import jax
    import jax.numpy as jnp

    from widelimit._finite.atoms import sparse_code_gram

    r = np.random.default_rng(0)
    rows = []
    for k, s in cases:
        Z = np.zeros((n, k), np.float32)
        cols = np.argsort(r.random((n, k)), axis=1)[:, :s]
        np.put_along_axis(Z, cols, r.random((n, s)).astype(np.float32) + 0.1, axis=1)
        Z, w = jnp.asarray(Z), jnp.ones(n, jnp.float32)
        row = {"K": k, "s": s}
        dense = jax.jit(lambda Z, w: Z.T @ (w[:, None] * Z))
        sparse = jax.jit(lambda Z, w, s=s: sparse_code_gram(Z, w, s))
        for name, f in (("dense", dense), ("sparse", sparse)):
            row[name] = timeit(lambda f=f: f(Z, w))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--one", nargs=6)
    p.add_argument("--one-stream", nargs=5)
    a = p.parse_args()
    if a.one:
        d, frac, n, k, epochs, rule = a.one
        return one_fit(d, float(frac), int(n), int(k), int(epochs), rule)
    if a.one_stream:
        frac, n, k, epochs, rule = a.one_stream
        return one_stream_fit(float(frac), int(n), int(k), int(epochs), rule)
    n, epochs, fracs, widths = 4000, 25, (0.05, 0.1, 0.25), (128, 512, 2048)
    gram = [(2048, 32), (2048, 64), (2048, 128), (4096, 64), (4096, 128), (8192, 128)]
    if a.quick:
        n, fracs, widths, gram = 1500, (0.05,), (512,), [(2048, 32), (2048, 128)]
    if SMOKE:
        n, epochs, widths, gram = 300, 3, (96,), [(2048, 16)]
    fits = []
    for data in ("sparse_coded",) if SMOKE else ("sparse_coded", "activations"):
        for frac in fracs:
            for k in widths:
                runs = {rule: fresh(data, frac, n, k, epochs, rule) for rule in ("baseline", "now")}
                fits.append({"data": data, "lam_over_median": frac, "K": k, **runs})
                print(json.dumps(fits[-1]), flush=True)
    sn, sepochs, sfracs, swidths = 8000, 3, (0.05, 0.25), (512, 2048)
    if a.quick:
        sn, sfracs, swidths = 2000, (0.05,), (512,)
    if SMOKE:
        sn, sepochs, swidths = 300, 1, (96,)
    streamed = []
    for frac in sfracs:
        for k in swidths:
            runs = {
                rule: fresh(frac, sn, k, sepochs, rule, flag="--one-stream")
                for rule in ("baseline", "now")
            }
            streamed.append({"lam_over_median": frac, "K": k, **runs})
            print(json.dumps(streamed[-1]), flush=True)
    payload = {"n": n, "d": 384, "epochs": epochs, "fits": fits}
    payload["streamed"] = {"n": sn, "epochs": sepochs, "batch_size": min(1000, sn // 2)}
    payload["streamed"]["fits"] = streamed
    payload["code_gram_n"] = n if SMOKE else 4000
    payload["code_gram"] = code_gram_times(payload["code_gram_n"], gram)
    path = write("working_sets" + ("_quick" if a.quick else ""), payload)
    print("wrote", path)


if __name__ == "__main__":
    main()
