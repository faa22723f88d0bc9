"""One process of the 2-process ``jax.distributed`` test (tests/test_out_of_core.py).

usage: python multiprocess_worker.py PORT N_PROCESSES PROCESS_ID DATA_DIR ATOMS_NPY LAM OUT_DIR
Reads its share of the rows of DATA_DIR (``ActivationStore(...).part()``), solves the wide limit
over all processes' rows (``distributed=True``), encodes its rows into OUT_DIR/part-<id>, trains
the SAE in OUT_DIR/sae0 for 20 steps and fits 2 streamed epochs over all processes' rows
(``train_sae``/``fit_dictionary`` with ``distributed=True``), does both again checkpointed (half,
then resumed), and writes OUT_DIR/result-<id>.json.
"""

import json
import sys

import jax

port, n, pid, data, atoms_path, lam, out = sys.argv[1:8]
jax.distributed.initialize(f"localhost:{port}", num_processes=int(n), process_id=int(pid))
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import widelimit as wl  # noqa: E402

lam = float(lam)
store = wl.ActivationStore(data, chunk_rows=512).part()
sol = wl.solve_wide(store, lam, distributed=True)
atoms = np.load(atoms_path)
codes = wl.encode(atoms, sol.bias, store, lam, out=f"{out}/part-{pid}", block_rows=256, tol=1e-6)
sae = wl.train_sae(
    store, wl.load_saelens(f"{out}/sae0"), lam, key=jax.random.PRNGKey(3), steps=20,
    batch_size=64, checkpoint_every=20, pool_rows=store.n_rows, distributed=True,
)  # fmt: skip
fit = wl.fit_dictionary(
    store, 80, lam, key=jax.random.PRNGKey(5), init=atoms[:80], batch_size=50, block_rows=200,
    max_epochs=2, loss_tol=0, stop="loss", code_tol=1e-10, distributed=True,
)  # fmt: skip
# the same fit and training, checkpointed into one directory that both processes see: 1 epoch
# (10 steps), then resumed to 2 epochs (20 steps)
opts = dict(key=jax.random.PRNGKey(5), init=atoms[:80], batch_size=50, block_rows=200,
            loss_tol=0, stop="loss", code_tol=1e-10, distributed=True,
            checkpoint_dir=f"{out}/fit-checkpoint")  # fmt: skip
wl.fit_dictionary(store, 80, lam, max_epochs=1, **opts)
fit2 = wl.fit_dictionary(store, 80, lam, max_epochs=2, **opts)
opts = dict(key=jax.random.PRNGKey(3), batch_size=64, checkpoint_every=10, pool_rows=store.n_rows,
            distributed=True, checkpoint_dir=f"{out}/sae-checkpoint")  # fmt: skip
wl.train_sae(store, wl.load_saelens(f"{out}/sae0"), lam, steps=10, **opts)
sae2 = wl.train_sae(store, wl.load_saelens(f"{out}/sae0"), lam, steps=20, **opts)
with open(f"{out}/result-{pid}.json", "w") as f:
    json.dump(
        {
            "processes": jax.process_count(),
            "rows": store.n_rows,
            "bias": np.asarray(sol.bias).tolist(),
            "objective": float(sol.objective),
            "gap": float(sol.gap),
            "code_norms": np.asarray(sol.code_norms).tolist(),
            "codes_rows": codes.shape[0],
            "sae_losses": np.asarray(sae.losses).tolist(),
            "fit_atoms": np.asarray(fit.atoms).tolist(),
            "fit_losses": np.asarray(fit.history.loss[:2]).tolist(),
            "fit_loss": float(fit.loss),
            "fit_codes_rows": fit.codes.shape[0],
            "sae_W_dec": np.asarray(sae.sae.W_dec).tolist(),
            "fit_resumed_from": fit2.resumed_from,
            "fit_resumed_atoms": np.asarray(fit2.atoms).tolist(),
            "fit_resumed_losses": np.asarray(fit2.history.loss[:2]).tolist(),
            "sae_resumed_from": sae2.resumed_from,
            "sae_resumed_losses": np.asarray(sae2.losses).tolist(),
        },
        f,
    )
