"""Rows/s of ``encode`` and of an SAE training step on this backend (issue 17's accelerator rows;
``make bench`` runs it on CPU, and ``gpu_check.sh`` on a lent GPU), each against the bare product
over the same rows in the same process.

- ``encode``: N = 2^18 rows (2^15 on CPU) of the scale benchmark's data (``scale.generate_store``:
  x = b + Σ of 32 of 3072 unit atoms, d = 768), its K = 4096 atoms (the 3072 and 1024 random
  ones), λ = 0.2, bias = the data mean, into ``SparseCodes`` (in memory, blocks of 8192 rows); the
  floor is X @ Dᵀ over the same blocks (the encode needs that product to select each row's
  working set and one more to certify each pass, so it is bounded by half the floor's rate).
- SAE step: a standard (ReLU) SAE of width 4096, batch 4096, 200 ``train_sae`` steps (25 on
  CPU); the floor is one X_b @ W_encᵀ per batch (a step's forward and backward take about six
  such products).
Each is timed on its first call (compilation included) and on a second, compiled call.
- Solve block (an experiment for the encode's default on accelerators): the working-set solve of
  one encode block (``working_set_lasso``, tiers (64, 256)) stepping through its rows 1024 at a
  time (the default, measured best on CPU) and all at once (fewer, larger steps: what a
  latency-bound GPU should prefer), first and warm call each, with the KKT residual each reached.
Writes this backend's record into benchmarks/results/device_rows.json under ``runs[backend]``,
keeping the other backends' records (``--quick``: device_rows_quick.json, this run only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, SMOKE, machine, write  # noqa: E402
from scale import generate_store, true_atoms  # noqa: E402

import widelimit as wl  # noqa: E402


def clock(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t, out


def matmul_floor(X, W, rows: int) -> float:
    """Seconds of X @ Wᵀ over blocks of ``rows`` rows (compiled first, the last block padded)."""
    Wj = jnp.asarray(W)
    mm = jax.jit(lambda x: x @ Wj.T)
    blocks = []
    for s in range(0, len(X), rows):
        xb = np.zeros((rows, X.shape[1]), np.float32)
        xb[: min(rows, len(X) - s)] = X[s : s + rows]
        blocks.append(jnp.asarray(xb))
    jax.block_until_ready(mm(blocks[0]))
    t = time.perf_counter()
    for xb in blocks:
        jax.block_until_ready(mm(xb))
    return time.perf_counter() - t


def solve_blocks(X, atoms, bias, lam: float, rows: int) -> dict:
    """Seconds of the working-set solve of the first ``rows`` rows (cold start, tiers (64, 256)),
    stepping through 1024 rows at a time and through all of them at once, under the float32
    matmul precision every public function sets (under TF32 the solve does not certify)."""
    from widelimit._finite.codes import code_tiers, working_set_lasso

    k = atoms.shape[0]
    args = [jnp.asarray(a) for a in (atoms, bias, X[:rows])]
    lam, z0 = jnp.float32(lam), jnp.zeros((rows, k), jnp.float32)
    out = {"rows": rows, "tiers": list(code_tiers(k, None))}
    for block in sorted({min(1024, rows), rows}):
        solve = jax.jit(
            lambda D, b, X, lam, z0, block=block: working_set_lasso(
                D, b, X, lam, z0, 1e-4, 500, code_tiers(k, None), block=block, kkt=True
            )
        )
        with jax.default_matmul_precision("float32"):
            first, _ = clock(lambda: solve(*args, lam, z0))
            warm, (_, worst) = clock(lambda: solve(*args, lam, z0))
        out[f"block_{block}"] = {
            "first_call_s": first, "warm_s": warm, "kkt_over_lam": float(worst / lam),
        }  # fmt: skip
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    quick = a.quick or SMOKE
    # an accelerator's rows at 2^18 rows and 200 steps; a CPU's (2 cores here) at 2^15 and 25
    big = (1 << 18, 200) if jax.default_backend() != "cpu" else (1 << 15, 25)
    n, k, steps, batch = (*big[:1], 4096, big[1], 4096) if not quick else (1 << 13, 256, 20, 256)
    work = tempfile.mkdtemp(prefix="widelimit-gpu-rows-")
    try:
        generate_store(work, n)
        X = np.concatenate([np.load(os.path.join(work, f)) for f in sorted(os.listdir(work))])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r = np.random.default_rng(1)
    atoms = np.concatenate([true_atoms(), r.normal(size=(1024, X.shape[1])).astype(np.float32)])
    atoms = atoms[np.sort(r.permutation(len(atoms))[:k])] if k < len(atoms) else atoms
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    bias = X.mean(0)
    Xj = jnp.asarray(X)
    rec = {"n": n, "d": X.shape[1], "k": k, "lam": 0.2}

    block = 8192 if not quick else 1024  # encode's default at K = 4096; both sides use it

    def enc():
        return wl.encode(atoms, bias, Xj, 0.2, sparse=True, block_rows=block, progress=False)

    first, _ = clock(enc)
    warm, codes = clock(enc)
    floor = matmul_floor(X - bias, atoms, block)
    rec["encode"] = {
        "first_call_s": first, "warm_s": warm, "rows_per_s": n / warm,
        "matmul_s": floor, "matmul_rows_per_s": n / floor, "throughput_vs_matmul": floor / warm,
        "mean_nonzeros_per_row": float(np.count_nonzero(np.asarray(codes.values)) / n),
    }  # fmt: skip
    print("encode", rec["encode"], flush=True)
    rec["solve_block"] = solve_blocks(X, atoms, bias, 0.2, block)
    print("solve_block", rec["solve_block"], flush=True)

    def sae():
        return wl.train_sae(
            Xj, k, 1e-3, key=jax.random.key(0), steps=steps, batch_size=batch,
            checkpoint_every=steps, progress=False,
        ).sae  # fmt: skip

    first, _ = clock(sae)
    warm, model = clock(sae)
    rows = steps * batch  # the floor over min(n, rows) rows, scaled to the steps' rows
    floor = matmul_floor(X[:rows], np.asarray(model.W_enc), batch) * rows / min(n, rows)
    rec["sae_step"] = {
        "steps": steps, "batch": batch, "first_call_s": first, "warm_s": warm,
        "rows_per_s": rows / warm, "matmul_s": floor, "matmul_rows_per_s": rows / floor,
        "throughput_vs_matmul": floor / warm,
    }  # fmt: skip
    print("sae_step", rec["sae_step"], flush=True)
    if quick:
        print("wrote", write("device_rows_quick", rec))
        return
    path = os.path.join(RESULTS, "device_rows.json")
    runs = {}
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f)["runs"]
    runs[jax.default_backend()] = {"machine": machine(), **rec}
    print("wrote", write("device_rows", {"runs": runs}))


if __name__ == "__main__":
    main()
