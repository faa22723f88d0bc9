"""Out-of-core scale (issue 17): a generated activation store larger than half of memory.

A directory of .npy shards (float32, d = 768) is generated once; each measurement then runs in a
fresh process (so its wall time includes compilation and its peak RSS is its own):
- the streamed wide solve at N and N/4 rows (peak RSS should not depend on N);
- ``encode`` at K = 4096 (the 3072 generating atoms and 1024 random ones, λ = 0.2) into sparse
  codes on disk, on two row counts, against the bare
  ``X @ Dᵀ`` product over the same blocks in the same process (the floor of an exact encode);
- ``check_optimality`` of those codes read back from disk;
- one streamed epoch of ``fit_dictionary`` (K = 1024, batch 1024) on N/64 rows;
- device scaling: ``encode`` over 1, 2, 4, 8 forced host devices (they share this machine's cores);
- the hull condition of a wide dictionary (``hull_table``) on generated sparse codes: the compact
  table (violated pairs only) at K = 65,536, and at K = 8192 beside the K × K table (the baseline).
  ``--only hull`` reruns just these and merges them into scale.json; ``--only encode`` reruns the
  encodes, the check and the device scaling (after the wide solve that gives their bias);
  ``--only fit`` the streamed fit epoch.
Writes benchmarks/results/scale.json and .png. ``--quick`` (and the smoke run of make test) uses
small sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, SMOKE, write  # noqa: E402

D_FEATURES = 768
SHARD_ROWS = 1 << 18


def generate_store(path: str, n: int, d: int = D_FEATURES, seed: int = 0) -> None:
    """n rows x = b + Σ_{32 atoms} z_k d_k + noise (lognormal z, 3072 Gaussian unit atoms) in
    .npy shards of ``SHARD_ROWS`` rows, written as a memmap so memory stays one shard."""
    os.makedirs(path, exist_ok=True)
    r = np.random.default_rng(seed)
    atoms = true_atoms(d, seed)
    r.normal(size=(4 * d, d))  # (the atoms' draws)
    b = (r.normal(size=d) * 2).astype(np.float32)
    for i, s in enumerate(range(0, n, SHARD_ROWS)):
        m = min(SHARD_ROWS, n - s)
        out = np.lib.format.open_memmap(
            os.path.join(path, f"shard-{i:05d}.npy"), "w+", np.float32, (m, d)
        )
        for t in range(0, m, 4096):
            k = min(4096, m - t)
            idx = r.integers(0, len(atoms), (k, 32))
            z = r.lognormal(0, 0.75, (k, 32)).astype(np.float32)
            out[t : t + k] = b + np.einsum("nk,nkd->nd", z, atoms[idx])
            out[t : t + k] += 0.05 * r.standard_normal((k, d), np.float32)
        out.flush()
        del out


def true_atoms(d: int = D_FEATURES, seed: int = 0) -> np.ndarray:
    """The store's 4·d generating unit atoms."""
    atoms = np.random.default_rng(seed).normal(size=(4 * d, d)).astype(np.float32)
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: of its own address space, unlike ru_maxrss,
    which a child inherits from the parent it was forked from)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def task(args) -> dict:
    """One measurement in this (fresh) process; returns its numbers."""
    import jax

    import widelimit as wl

    t0 = time.perf_counter()
    if args.task == "hull":  # N × K sparse codes, 16 nonzeros per row, random unit atoms
        r = np.random.default_rng(0)
        n, nnz = 4000, 16
        idx = np.stack([r.choice(args.k, nnz, replace=False) for _ in range(n)]).astype(np.int32)
        codes = wl.SparseCodes(idx, r.lognormal(0, 0.75, (n, nnz)).astype(np.float32), args.k)
        atoms = r.normal(size=(args.k, D_FEATURES)).astype(np.float32)
        atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
        t0 = time.perf_counter()
        violated_only = 1e-3 if args.hull == "violated" else None
        table = wl.hull_table(codes, atoms, violated_only=violated_only)
        n_bad = len(table.pairs) if violated_only is not None else int(
            (np.asarray(-table.margin / np.maximum(table.mu, 1e-30)[None, :]) > 1e-3).sum()
        )  # fmt: skip
        return {"k": args.k, "rows": n, "nonzeros_per_row": nnz, "hull": args.hull,
                "seconds": time.perf_counter() - t0, "violated_pairs": n_bad,
                "kxk_gb_float32": 5 * args.k**2 * 4 / 2**30}  # fmt: skip
    store = wl.ActivationStore(args.store).part(0, args.parts)
    if args.task == "wide":
        sol = wl.solve_wide(store, args.lam)
        np.save(os.path.join(args.work, "bias.npy"), np.asarray(sol.bias))
        return {
            "rows": store.n_rows,
            "seconds": time.perf_counter() - t0,
            "passes": int(sol.num_steps),
            "gap": float(sol.gap),
            "objective": float(sol.objective),
        }
    bias = None if args.task == "fit" else np.load(os.path.join(args.work, "bias.npy"))
    # the generating atoms (and random unit atoms beyond them): codes with tens of nonzeros per
    # row at λ = args.code_lam, as in an SAE's codes
    atoms = true_atoms()[: args.k]
    if args.k > len(atoms):
        extra = np.random.default_rng(1).normal(size=(args.k - len(atoms), D_FEATURES))
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        atoms = np.concatenate([atoms, extra.astype(np.float32)])
    args.lam = args.code_lam
    devices = None if args.devices == 0 else "all"
    if args.task == "encode":
        out = os.path.join(args.work, f"codes-{store.n_rows}-{args.devices}")
        shutil.rmtree(out, ignore_errors=True)
        codes = wl.encode(atoms, bias, store, args.lam, out=out, devices=devices, progress=False)
        t_encode = time.perf_counter() - t0
        # the floor: X @ Dᵀ over the same blocks (compiled once, blocks padded alike)
        import jax.numpy as jnp

        Dj = jnp.asarray(atoms)
        mm = jax.jit(lambda x: x @ Dj.T)
        rows = codes.blocks[0]["rows"]
        t1 = time.perf_counter()
        for _, block in store.blocks():
            for s in range(0, len(block), rows):
                xb = np.zeros((rows, block.shape[1]), np.float32)
                xb[: min(rows, len(block) - s)] = block[s : s + rows]
                mm(xb).block_until_ready()
        t_mm = time.perf_counter() - t1
        nnz = sum(int(np.count_nonzero(c.values)) for _, c in codes.block_codes())
        return {
            "rows": store.n_rows,
            "k": args.k,
            "devices": jax.device_count(),
            "seconds": t_encode,
            "rows_per_s": store.n_rows / t_encode,
            "matmul_seconds": t_mm,
            "matmul_rows_per_s": store.n_rows / t_mm,
            "throughput_vs_matmul": t_mm / t_encode,
            "mean_nonzeros_per_row": nnz / store.n_rows,
            "codes_mb_on_disk": sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
            / 2**20,
        }
    if args.task == "fit":  # one streamed epoch of online minibatch dictionary learning
        epoch_end = []
        fit = wl.fit_dictionary(
            store, args.k, args.code_lam, key=jax.random.PRNGKey(0), batch_size=1024,
            max_epochs=args.epochs, loss_tol=0.0, init=atoms, codes_dir=os.path.join(args.work, f"fit-codes-{args.devices}"),
            progress=False, devices=devices, callback=lambda *_: epoch_end.append(time.perf_counter()),
        )  # fmt: skip
        return {
            "rows": store.n_rows,
            "k": args.k,
            "devices": jax.device_count() if devices else 1,
            "batch_size": 1024,
            "seconds": time.perf_counter() - t0,
            # a second epoch is warm: its time is the epoch's alone (no wide solve, no compile)
            **(
                {
                    "warm_epoch_seconds": epoch_end[1] - epoch_end[0],
                    "epoch_rows_per_s": store.n_rows / (epoch_end[1] - epoch_end[0]),
                }
                if len(epoch_end) > 1
                else {}
            ),  # fmt: skip
            "fit_seconds": fit.seconds,
            "online_loss": float(fit.history.loss[0]),
            "loss": float(fit.loss),
            "wide_bound": float(fit.wide_bound),
            "code_kkt": float(fit.code_kkt),
        }
    if args.task == "check":
        codes = wl.load_codes(os.path.join(args.work, f"codes-{store.n_rows}-0"))
        rep = wl.check_optimality(store, atoms, codes, bias, args.lam)
        return {
            "rows": store.n_rows,
            "k": args.k,
            "seconds": time.perf_counter() - t0,
            "code_kkt_max": float(rep.code_kkt_max),
            "violated_pairs": len(rep.violated_pairs),
        }
    raise ValueError(args.task)


def encodes(args, quick: bool):
    """The encodes at two row counts, the check of the larger one's codes, device scaling."""
    parts = args.encode_parts[-1:] if SMOKE else args.encode_parts
    enc = [run(args, task="encode", parts=p, k=args.k) for p in parts]
    check = run(args, task="check", parts=args.encode_parts[-1], k=args.k)
    return enc, check, device_runs(args, quick, device_parts(args, quick))


def device_parts(args, quick: bool) -> int:
    """The device-scaling encodes take the first 1/this of the store's rows."""
    return args.encode_parts[0] * (4 if not quick else 2)


def device_runs(args, quick: bool, parts: int) -> list[dict]:
    """``encode`` at K/4 of the rows ``parts`` takes, over 1, 2, 4 and 8 forced host devices."""
    return [
        run(args, task="encode", parts=parts, k=args.k // 4, devices=n)
        for n in ((2,) if SMOKE else (1, 2, 4, 8))
    ]


def fit_device_runs(args, quick: bool, parts: int) -> list[dict]:
    """Two streamed ``fit_dictionary`` epochs (the second one warm) at K/4 of the rows ``parts``
    takes, over 1, 2, 4 and 8 forced host devices."""
    return [
        run(args, task="fit", parts=parts, k=args.k // 4, devices=n, epochs=2)
        for n in ((2,) if SMOKE else (1, 2, 4, 8))
    ]


def hull_runs(args, ks) -> list[dict]:
    """The K × K table (baseline) and the compact one at ks[0], the compact one at ks[1]."""
    small, wide = ks
    return [run(args, task="hull", k=small, hull="full"), run(args, task="hull", k=small),
            run(args, task="hull", k=wide)]  # fmt: skip


def last_payload(quick: bool) -> dict:
    """The last full run's results, which a partial rerun (``--only``) updates."""
    with open(os.path.join(RESULTS, "scale_quick.json" if quick else "scale.json")) as f:
        return {k: v for k, v in json.load(f).items() if k != "machine"}


def save_rerun(payload: dict, part: str, quick: bool) -> None:
    """Writes ``payload`` with the time ``part`` was rerun, and its figure."""
    payload.setdefault("reruns", {})[part] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("wrote", write("scale_quick" if quick else "scale", payload))
    plot(payload, "scale_quick" if quick else "scale")


def run(args, **kw) -> dict:
    """``task`` in a fresh process; adds its peak RSS."""
    cmd = [sys.executable, __file__, "--task", kw.pop("task"), "--store", str(args.store_dir)]
    cmd += ["--work", str(args.work), "--lam", str(args.lam), "--code-lam", str(args.code_lam)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    env = dict(os.environ)
    if kw.get("devices"):
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={kw['devices']}"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(kw, res, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--task")
    ap.add_argument("--store")
    ap.add_argument("--work")
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--devices", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lam", type=float, default=0.0)
    ap.add_argument("--code-lam", type=float, default=0.2)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--encode-parts", type=int, nargs=2, default=[64, 32])
    ap.add_argument("--store-dir", default=None)
    ap.add_argument("--hull", default="violated")
    ap.add_argument("--only", choices=["hull", "encode", "fit", "devices"])
    args = ap.parse_args()
    if args.task:
        res = task(args)
        res["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(res))
        return
    quick = args.quick or SMOKE
    if quick:
        args.rows, args.k, args.encode_parts = 1 << 15, 256, [8, 4]
    if SMOKE:  # make test: only that the script runs end to end
        args.rows, args.k, args.encode_parts = 1 << 13, 128, [2, 1]
    hull_k = (1024, 4096) if quick else (8192, 65536)
    hull_k = (256, 1024) if SMOKE else hull_k
    if args.only == "hull":
        payload = last_payload(quick)
        payload["hull"] = hull_runs(args, hull_k)
        print("wrote", write("scale_quick" if quick else "scale", payload))
        return
    args.work = tempfile.mkdtemp(prefix="widelimit-scale-")
    if args.only == "fit":  # the streamed epoch alone, on a store kept (--store-dir) or made
        payload = last_payload(quick)
        keep = args.store_dir is not None
        args.store_dir = args.store_dir or os.path.join(args.work, "store")
        try:
            if not os.path.isdir(args.store_dir):
                generate_store(args.store_dir, args.rows)
            payload["fit_epoch"] = run(args, task="fit", parts=args.encode_parts[0], k=args.k // 4)
        finally:
            shutil.rmtree(args.work, ignore_errors=True)
            if not keep:
                shutil.rmtree(args.store_dir, ignore_errors=True)
        save_rerun(payload, "fit_epoch", quick)
        return
    if args.only == "devices":  # the device-scaling encodes alone, on a store of their rows
        payload = last_payload(quick)
        args.store_dir = os.path.join(args.work, "store")
        args.lam = payload["lam"]
        try:  # the same generator, as many rows as the full run's device encodes take
            generate_store(args.store_dir, args.rows // device_parts(args, quick))
            run(args, task="wide", parts=1)  # the bias of these rows
            payload["device_scaling"] = device_runs(args, quick, 1)
            payload["fit_device_scaling"] = fit_device_runs(args, quick, 1)
        finally:
            shutil.rmtree(args.work, ignore_errors=True)
        save_rerun(payload, "device_scaling", quick)
        return
    if args.only == "encode":
        if args.store_dir is None:
            raise SystemExit("--only encode rereads the store of the last run: pass --store-dir")
        payload = last_payload(quick)
        args.lam = payload["lam"]
        try:
            run(args, task="wide", parts=1)  # the bias of all rows
            payload["encode"], payload["check_optimality"], payload["device_scaling"] = encodes(
                args, quick
            )
        finally:
            shutil.rmtree(args.work, ignore_errors=True)
        payload["goals"]["encode_at_least_half_matmul_throughput"] = (
            min(e["throughput_vs_matmul"] for e in payload["encode"]) >= 0.5
        )
        save_rerun(payload, "encode", quick)
        return
    keep_store = args.store_dir is not None  # --store-dir: generated once, kept for reruns
    args.store_dir = args.store_dir or os.path.join(args.work, "store")
    try:
        t = time.perf_counter()
        if not os.path.isdir(args.store_dir):
            generate_store(args.store_dir, args.rows)
        gen_s = time.perf_counter() - t
        gb = (
            sum(
                os.path.getsize(os.path.join(args.store_dir, f)) for f in os.listdir(args.store_dir)
            )
            / 2**30
        )
        # λ: half the median distance to the mean of a sample (as in wide_scaling.py)
        sample = np.load(os.path.join(args.store_dir, sorted(os.listdir(args.store_dir))[0]))
        sample = sample[:: max(1, len(sample) // 4096)].astype(np.float64)
        args.lam = 0.5 * float(np.median(np.linalg.norm(sample - sample.mean(0), axis=1)))
        # make test's smoke run: one process per task (each costs a JAX start and compiles)
        wide = [run(args, task="wide", parts=p) for p in ((1,) if SMOKE else (4, 1))]
        wide = wide * 2 if SMOKE else wide  # N/4, then N (the bias of N is kept)
        enc, check, devices = encodes(args, quick)
        fit = None if SMOKE else run(args, task="fit", parts=args.encode_parts[0], k=args.k // 4)
        fit_devices = None if SMOKE else fit_device_runs(args, quick, device_parts(args, quick))
        hull = hull_runs(args, hull_k)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
        if not keep_store:
            shutil.rmtree(args.store_dir, ignore_errors=True)
    rss = [w["peak_rss_gb"] for w in wide]
    payload = {
        "store": {
            "rows": args.rows,
            "d": D_FEATURES,
            "dtype": "float32",
            "gb_on_disk": gb,
            "shard_rows": SHARD_ROWS,
            "generate_seconds": gen_s,
        },
        "lam": args.lam,
        "code_lam": args.code_lam,
        "wide": wide,
        "wide_rss_ratio_N_vs_N4": rss[1] / rss[0],
        "encode": enc,
        "check_optimality": check,
        "fit_epoch": fit,
        "device_scaling": devices,
        "fit_device_scaling": fit_devices,
        "hull": hull,
        "goals": {
            "peak_rss_independent_of_N_within_10pct": abs(rss[1] / rss[0] - 1) <= 0.10,
            "peak_rss_under_3gb": max(r["peak_rss_gb"] for r in wide + enc + [check]) < 3,
            "encode_at_least_half_matmul_throughput": min(e["throughput_vs_matmul"] for e in enc)
            >= 0.5,
        },
    }
    name = "scale_quick" if quick else "scale"
    path = write(name, payload)
    plot(payload, name)
    print("wrote", path)


def plot(p, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    w = p["wide"]
    ax[0].bar([f"wide N={r['rows']:.0e}" for r in w], [r["peak_rss_gb"] for r in w], color="C0")
    e = p["encode"]
    ax[0].bar([f"encode N={r['rows']:.0e}" for r in e], [r["peak_rss_gb"] for r in e], color="C1")
    ax[0].set_ylabel("peak RSS (GB)")
    ax[0].tick_params(axis="x", rotation=20)
    ax[1].bar(["encode", "X @ Dᵀ"], [e[-1]["rows_per_s"], e[-1]["matmul_rows_per_s"]])
    ax[1].set_ylabel(f"rows/s at K={e[-1]['k']}")
    dv, fv = p["device_scaling"], p.get("fit_device_scaling") or []
    lines = [(dv, "rows_per_s", "o-", "encode"), (dv, "matmul_rows_per_s", "s--", "X @ Dᵀ")]
    lines += [(fv, "epoch_rows_per_s", "^-", "fit epoch")] if fv else []
    for runs, key, style, label in lines:  # relative to the fewest devices
        ax[2].plot([r["devices"] for r in runs], [r[key] / runs[0][key] for r in runs], style,
                   label=label)  # fmt: skip
    ax[2].set_xlabel("forced host devices (2 cores)")
    ax[2].set_ylabel("rows/s, relative to 1 device")
    ax[2].legend()
    fig.suptitle(
        f"out of core: {p['store']['rows']:.0e} × {p['store']['d']} float32 store, {p['store']['gb_on_disk']:.1f} GB"
    )
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, name + ".png"), dpi=130)


if __name__ == "__main__":
    main()
