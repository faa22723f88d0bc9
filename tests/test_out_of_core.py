"""Out-of-core data and sparse codes (issue 17): activation stores (arrays, .npy/.safetensors files
and directories of shards, iterables), ``SparseCodes`` and ``CodeStore``s, block-by-block analyses
that equal the in-memory ones, data parallelism over devices and 2-process ``jax.distributed`` runs.
"""

import json
import os
import socket
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from helpers import subprocess_xla_flags
from safetensors.numpy import save_file

import widelimit as wl
from widelimit._core.code_store import CodeWriter

LAM = 0.6


@pytest.fixture(scope="module")
def problem():
    """Real activations (1500 × 384), 96 unit atoms (working-set codes), their exact codes."""
    X = np.asarray(wl.datasets.activations(1500).X, np.float64)
    rng = np.random.default_rng(0)
    D = X[rng.choice(len(X), 96, replace=False)] - X.mean(0)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    b = np.asarray(wl.solve_wide(X, LAM).bias)
    Z = np.asarray(wl.encode(D, b, X, LAM, tol=1e-6))
    return X, D, b, Z


def shard_dir(tmp_path, X, cuts=(0, 400, 1100), dtype=None):
    """X split at ``cuts`` into alternating .safetensors (key "acts") and .npy shards."""
    d = tmp_path / "shards"
    d.mkdir()
    bounds = list(cuts) + [len(X)]
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        part = X[s:e] if dtype is None else X[s:e].astype(dtype)
        if i % 2 == 0:
            save_file({"acts": np.ascontiguousarray(part)}, str(d / f"{i:03d}.safetensors"))
        else:
            np.save(d / f"{i:03d}.npy", part)
    (d / "README.txt").write_text("not a shard")  # other files are ignored
    return str(d)


# --- stores ----------------------------------------------------------------------------------


def test_store_reads_every_kind_of_source_in_order(problem, tmp_path):
    X = problem[0]
    np.save(tmp_path / "x.npy", X)
    save_file({"acts": X}, str(tmp_path / "x.safetensors"))
    sources = {
        "array": X,
        "npy": str(tmp_path / "x.npy"),
        "safetensors": str(tmp_path / "x.safetensors"),
        "memmap": np.load(tmp_path / "x.npy", mmap_mode="r"),
        "shards": shard_dir(tmp_path, X),
        "blocks": [X[:700], X[700:]],
        "callable": lambda: iter([X[:100], X[100:]]),
    }
    for name, src in sources.items():
        store = wl.ActivationStore(src, chunk_rows=256)
        got = np.concatenate([np.asarray(b) for b in store])
        np.testing.assert_array_equal(got, X, err_msg=name)
        assert max(len(b) for b in store) <= 256, name
        assert store.n_features == X.shape[1]
        starts = [s for s, _ in store.blocks()]
        assert starts[0] == 0 and starts == sorted(starts)


def test_store_parts_partition_the_rows(problem, tmp_path):
    X = problem[0]
    for src in (X, shard_dir(tmp_path, X)):
        store = wl.ActivationStore(src, chunk_rows=128)
        parts = [store.part(i, 3) for i in range(3)]
        got = np.concatenate([np.concatenate(list(p)) for p in parts])
        np.testing.assert_array_equal(got, X)
        assert [p.n_rows for p in parts] == [500, 500, 500]
    assert wl.ActivationStore(X).part().n_rows == len(X)  # one process: all rows
    with pytest.raises(ValueError, match="does not exist"):
        wl.ActivationStore(X).part(3, 3)


def test_store_half_precision_shards(problem, tmp_path):
    X = problem[0][:300]
    for dt in (np.float16, ml_dtypes.bfloat16):
        d = tmp_path / np.dtype(dt).name
        d.mkdir()
        save_file({"acts": X.astype(dt)}, str(d / "0.safetensors"))
        store = wl.ActivationStore(str(d))
        assert store.dtype == np.dtype(dt)
        np.testing.assert_array_equal(np.concatenate(list(store)), X.astype(dt))
        sol = wl.solve_wide(str(d), LAM)  # computed in float32 from the half-precision rows
        ref = wl.solve_wide(X.astype(dt).astype(np.float32), LAM)
        np.testing.assert_allclose(sol.objective, ref.objective, rtol=1e-5)


def test_bad_shards_are_errors_naming_the_shard_before_any_work(problem, tmp_path):
    X = problem[0][:200].astype(np.float32)
    d = tmp_path / "bad"
    d.mkdir()
    np.save(d / "0.npy", X)
    np.save(d / "1.npy", X[:, :10])  # another n_features
    with pytest.raises(ValueError, match=r"1\.npy.*10 features"):
        wl.ActivationStore(str(d))
    np.save(d / "1.npy", X.astype(np.float64))  # another dtype
    with pytest.raises(ValueError, match=r"1\.npy.*float64"):
        wl.solve_wide(str(d), LAM)
    np.save(d / "1.npy", X)
    raw = (d / "1.npy").read_bytes()
    (d / "1.npy").write_bytes(raw[: len(raw) - 100])  # truncated
    with pytest.raises(ValueError, match=r"1\.npy.*truncated"):
        wl.encode(np.eye(4, X.shape[1]), None, str(d), LAM, sparse=True)
    (d / "1.npy").unlink()
    (d / "2.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ValueError, match=r"2\.safetensors.*not a valid"):
        wl.ActivationStore(str(d))
    (d / "2.safetensors").unlink()
    save_file({"a": X, "b": X}, str(d / "2.safetensors"))
    with pytest.raises(ValueError, match="pass key="):
        wl.ActivationStore(str(d))
    assert wl.ActivationStore(str(d), key="a").n_rows == 400
    save_file({"a": X[0]}, str(d / "3.safetensors"))
    with pytest.raises(ValueError, match="2-D"):
        wl.ActivationStore(str(d), key="a")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .npy or .safetensors"):
        wl.ActivationStore(str(empty))
    with pytest.raises(ValueError, match="no such file"):
        wl.ActivationStore(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="one-shot"):
        wl.ActivationStore(iter([X]))
    with pytest.raises(ValueError, match="weights"):
        wl.ActivationStore(X, weights=np.ones(3))


def test_iterable_store_reads_ahead_in_a_thread_and_passes_errors_on(problem):
    X = problem[0][:300]

    def blocks():
        yield X[:100]
        raise OSError("disk gone")

    store = wl.ActivationStore(blocks, chunk_rows=64)
    with pytest.raises(OSError, match="disk gone"):
        list(store)


def test_solve_wide_on_a_directory_of_shards_with_weights(problem, tmp_path):
    X = problem[0]
    w = np.random.default_rng(1).uniform(0.2, 2, len(X))
    d = shard_dir(tmp_path, X)
    ref = wl.solve_wide(X, LAM, weights=w)
    sol = wl.solve_wide(wl.ActivationStore(d, weights=w, chunk_rows=300), LAM)
    np.testing.assert_allclose(sol.objective, ref.objective, rtol=1e-9)
    np.testing.assert_allclose(sol.bias, ref.bias, atol=1e-7)
    np.testing.assert_allclose(sol.code_norms, ref.code_norms, atol=1e-6)


# --- sparse codes ----------------------------------------------------------------------------


def test_sparse_codes_round_trip_and_refuse_to_truncate(problem):
    Z = problem[3]
    sc = wl.SparseCodes.from_dense(Z)
    assert sc.shape == Z.shape and sc.k == int((Z > 0).sum(1).max())
    assert int(sc.nnz) == int((Z > 0).sum())
    np.testing.assert_array_equal(sc.todense(), Z)
    np.testing.assert_array_equal(sc.dense_rows(np.array([5, 2, 5])), Z[[5, 2, 5]])
    np.testing.assert_array_equal(sc.to_bcoo().todense(), Z)
    with pytest.raises(ValueError, match="more than k"):
        wl.SparseCodes.from_dense(Z, k=sc.k - 1)
    with pytest.raises(ValueError, match="outside"):
        wl.dictionary_loss(
            problem[0], problem[1], wl.SparseCodes(sc.indices + 200, sc.values, 96), None, LAM
        )


def test_sparse_codes_inside_jit_vmap_and_grad(problem):
    X, D, b, Z = (
        jnp.asarray(a[:200]) if i in (0, 3) else jnp.asarray(a) for i, a in enumerate(problem)
    )
    k = int((Z > 0).sum(1).max())

    @jax.jit
    def loss(D, Z):
        sc = wl.SparseCodes.from_dense(Z, k=k)
        return wl.dictionary_loss(X, D, sc, b, LAM), wl.decode(D, b, sc)

    (L, Xh), (L0, Xh0) = loss(D, Z), (wl.dictionary_loss(X, D, Z, b, LAM), wl.decode(D, b, Z))
    np.testing.assert_allclose(L, L0, rtol=1e-12)
    np.testing.assert_allclose(Xh, Xh0, atol=1e-12)
    g = jax.grad(lambda D: loss(D, Z)[0])(D)
    g0 = jax.grad(lambda D: wl.dictionary_loss(X, D, Z, b, LAM))(D)
    np.testing.assert_allclose(g, g0, atol=1e-12)
    sc = wl.SparseCodes.from_dense(Z)
    rows = jax.vmap(lambda i, v: wl.decode(D, b, wl.SparseCodes(i[None], v[None], 96))[0])(
        sc.indices, sc.values
    )
    np.testing.assert_allclose(rows, Xh0, atol=1e-12)


def test_encode_sparse_equals_the_dense_codes(problem):
    X, D, b, Z = problem
    sc = wl.encode(D, b, X, LAM, tol=1e-6, sparse=True, block_rows=400)
    assert isinstance(sc, wl.SparseCodes) and sc.shape == Z.shape
    assert sc.k < 96 and sc.k & (sc.k - 1) == 0  # a power of two
    np.testing.assert_allclose(sc.todense(), Z, atol=1e-5)
    rep = wl.check_optimality(X, D, sc, b, LAM)
    assert float(rep.code_kkt_max) <= 1e-6 * 1.01


def test_analyses_of_stores_and_sparse_codes_equal_the_in_memory_ones(problem, tmp_path):
    X, D, b, Z = problem
    sc = wl.SparseCodes.from_dense(Z)
    d = shard_dir(tmp_path, X)
    w = np.random.default_rng(2).uniform(0, 2, len(X))
    for bias, weights in ((b, w), (None, None)):
        if True:
            kw = dict(weights=weights)
            L0 = wl.dictionary_loss(X, D, Z, bias, LAM, **kw)
            np.testing.assert_allclose(
                wl.dictionary_loss(d, D, sc, bias, LAM, **kw), L0, rtol=1e-12
            )
            lb0, lb = (
                wl.wide_lower_bound(X, LAM, D, Z, bias, **kw),
                wl.wide_lower_bound(d, LAM, D, sc, bias, **kw),
            )
            for f in ("loss", "residual_bound", "gap"):
                np.testing.assert_allclose(getattr(lb, f), getattr(lb0, f), rtol=1e-9, err_msg=f)
            r0, r = (
                wl.check_optimality(X, D, Z, bias, LAM, **kw),
                wl.check_optimality(d, D, sc, bias, LAM, **kw),
            )
            assert_reports_equal(r, r0)


def test_normalised_atoms_out_of_core(problem):
    X, D, b, Z = problem
    s = np.linspace(0.5, 2, 96)
    r0 = wl.check_optimality(X, D * s[:, None], Z / s, b, LAM, normalise=True)
    r = wl.check_optimality(
        X, D * s[:, None], wl.SparseCodes.from_dense(Z / s), b, LAM, normalise=True
    )
    assert_reports_equal(r, r0)
    # the compact report (violated pairs only), rescaled column by column; feature 0 made dense
    # (I_0 empty: every pair (0, j) fails) and feature 1 active on most rows
    Z2 = Z.copy()
    Z2[:, 0] += 0.1
    Z2[::3, 1] += 0.05
    c = wl.check_optimality(
        X, D * s[:, None], wl.SparseCodes.from_dense(Z2 / s), b, LAM, normalise=True,
        hull="violated", tol=1e-6,
    )  # fmt: skip
    f = wl.check_optimality(X, D * s[:, None], Z2 / s, b, LAM, normalise=True, tol=1e-6)
    v = f.violated_pairs
    assert c.compact and len(v) > 0 and bool(c.passed) == bool(f.passed)
    assert sorted(map(tuple, c.violated_pairs.tolist())) == sorted(map(tuple, v.tolist()))
    i, j = c.violated_pairs[:, 0], c.violated_pairs[:, 1]
    for a, full in (("lo", "hull_lo"), ("hi", "hull_hi"), ("target", "hull_target"),
                    ("margin", "hull_margin")):  # fmt: skip
        np.testing.assert_allclose(
            getattr(c.hull_pairs, a), np.asarray(getattr(f, full))[i, j], rtol=1e-7, atol=1e-12
        )


def assert_reports_equal(r, r0):
    for f in (
        "code_kkt_max",
        "code_kkt_per_atom",
        "atom_stationarity",
        "bias_residual",
        "wide_certificate",
        "hull_lo",
        "hull_hi",
        "hull_target",
        "hull_margin",
        "mu",
    ):
        a, c = np.asarray(getattr(r, f)), np.asarray(getattr(r0, f))
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(c), err_msg=f)
        np.testing.assert_allclose(
            a[np.isfinite(a)], c[np.isfinite(c)], rtol=1e-7, atol=1e-9, err_msg=f
        )
    for f in ("wants_new_atom", "hull_violated", "passed"):
        np.testing.assert_array_equal(getattr(r, f), getattr(r0, f), err_msg=f)


def test_bad_codes_out_of_core_name_the_rows(problem, tmp_path):
    X, D, b, Z = problem
    bad = Z.copy()
    bad[1234, 3] = -1.0
    with pytest.raises(ValueError, match="negative code in rows"):
        wl.check_optimality(X, D, wl.SparseCodes.from_dense(bad), b, LAM)
    sc = wl.SparseCodes.from_dense(Z)
    idx = np.asarray(sc.indices).copy()
    idx[0, 0] = D.shape[0] + 3  # a gather clamps it to the last atom: decode returned a wrong x̂
    with pytest.raises(ValueError, match="indices outside"):
        wl.decode(D, b, wl.SparseCodes(idx, sc.values, D.shape[0]))
    with pytest.raises(ValueError, match="columns, one per atom"):
        wl.decode(D, b, Z[:, :-1])
    Xn = X.copy()
    Xn[77, 0] = np.nan
    np.save(tmp_path / "x.npy", Xn)
    with pytest.raises(ValueError, match="NaN or Inf in rows 0"):
        wl.dictionary_loss(str(tmp_path / "x.npy"), D, wl.SparseCodes.from_dense(Z), b, LAM)
    with pytest.raises(ValueError, match="shape"):
        wl.dictionary_loss(X[:100], D, wl.SparseCodes.from_dense(Z), b, LAM)
    # a streamed encode named no row and returned zero codes for a NaN row (its solve dropped the
    # row's residual from the worst one); now the row is named and nothing is written
    for source in (str(tmp_path / "x.npy"), Xn):
        with pytest.raises(ValueError, match="NaN or Inf \\(row 77\\)"):
            wl.encode(D, b, source, LAM, sparse=True, progress=False)
    with pytest.raises(ValueError, match="NaN or Inf \\(row 77\\)"):
        wl.encode(D, b, str(tmp_path / "x.npy"), LAM, out=tmp_path / "codes", progress=False)
    assert not any((tmp_path / "codes").glob("*.npy"))
    from widelimit._finite.codes import _solve_codes, code_tiers

    k = D.shape[0]
    sol = _solve_codes(D, b, Xn[:200], LAM, np.zeros((200, k)), 1e-4, 500, code_tiers(k, None))
    assert sol.result == wl.RESULTS.nonfinite  # not "successful" with NaN codes in row 77


# --- codes on disk ----------------------------------------------------------------------------


def test_encode_to_disk_resumes_after_an_interruption(problem, tmp_path, monkeypatch):
    X, D, b, Z = problem
    d = shard_dir(tmp_path, X)
    full = wl.encode(D, b, d, LAM, out=tmp_path / "full", block_rows=256, tol=1e-6)
    assert isinstance(full, wl.CodeStore) and full.shape == Z.shape
    np.testing.assert_allclose(full.dense_rows(slice(0, len(X))), Z, atol=1e-5)
    assert_reports_equal(
        wl.check_optimality(d, D, full, b, LAM),
        wl.check_optimality(X, D, full.load().todense(), b, LAM),
    )

    calls, append = [], CodeWriter.append

    def dying(self, codes):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        append(self, codes)

    monkeypatch.setattr(CodeWriter, "append", dying)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        wl.encode(D, b, d, LAM, out=out, block_rows=256, tol=1e-6)
    with pytest.raises(ValueError, match="incomplete"):
        wl.load_codes(out)
    monkeypatch.setattr(CodeWriter, "append", append)
    first = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith(".npy")}
    assert len(first) == 6
    resumed = wl.encode(D, b, d, LAM, out=out, block_rows=256, tol=1e-6)
    assert all(os.stat(out / f).st_mtime_ns == t for f, t in first.items())  # not rewritten
    for (_, a), (_, c) in zip(resumed.block_codes(), full.block_codes(), strict=True):
        np.testing.assert_array_equal(a.indices, c.indices)
        np.testing.assert_array_equal(a.values, c.values)
    with pytest.raises(ValueError, match="different problem"):
        wl.encode(D, b, d, 2 * LAM, out=out, block_rows=256, tol=1e-6)
    assert not any(f.endswith(".tmp") for f in os.listdir(out))
    # damaged blocks are named when the codes are loaded, before any is used (a truncated file
    # loaded, then failed on first use with numpy's "mmap length is greater than file size")
    values = out / "block-000001.values.npy"
    whole = values.read_bytes()
    values.write_bytes(whole[:-8])
    with pytest.raises(ValueError, match="block-000001.values.npy' is truncated"):
        wl.load_codes(out)
    np.save(values, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="holds float32\\[3, 2\\]"):
        wl.load_codes(out)
    values.unlink()
    with pytest.raises(ValueError, match="is missing"):
        wl.load_codes(out)
    values.write_bytes(whole)
    assert wl.load_codes(out).shape == Z.shape


# --- dictionary learning from a store -------------------------------------------------------------


def test_fit_dictionary_from_a_store_matches_the_in_memory_minibatch_fit(problem, tmp_path):
    X = problem[0].astype(np.float32)
    d = shard_dir(tmp_path, X)
    kw = dict(key=jax.random.PRNGKey(0), batch_size=100, max_epochs=2, progress=False)
    mem = wl.fit_dictionary(X, 48, LAM, **kw)
    st = wl.fit_dictionary(d, 48, LAM, block_rows=500, codes_dir=tmp_path / "codes", **kw)
    assert isinstance(st.codes, wl.CodeStore) and st.codes.shape == (1500, 48)
    # the same online algorithm (codes from zero, blocks shuffled apart): the same loss to 1 %
    assert abs(float(st.loss) - float(mem.loss)) <= 0.01 * float(mem.loss)
    np.testing.assert_allclose(
        float(st.loss), float(wl.dictionary_loss(X, st.atoms, st.codes.load(), st.bias, LAM)),
        rtol=1e-5,
    )  # fmt: skip
    assert float(st.code_kkt) <= 1.01e-4 and float(st.loss) >= float(st.wide_bound)
    with pytest.raises(ValueError, match="batch_size"):
        wl.fit_dictionary(d, 48, LAM, key=jax.random.PRNGKey(0))


def test_fit_from_a_store_resumes_at_its_stream_position(problem, tmp_path, monkeypatch):
    import widelimit._finite.stream_fit as sf

    X = problem[0][:1000].astype(np.float32)
    d = shard_dir(tmp_path, X, cuts=(0, 300, 700))
    kw = dict(key=jax.random.PRNGKey(1), batch_size=100, max_epochs=2, block_rows=200,
              progress=False, loss_tol=0, stop="loss")  # fmt: skip
    full = wl.fit_dictionary(d, 32, LAM, **kw)
    calls, block = [], sf._block

    def dying(*a):
        if len(calls) == 7:  # in the middle of the second epoch (5 blocks per epoch)
            raise KeyboardInterrupt
        calls.append(1)
        return block(*a)

    monkeypatch.setattr(sf, "_block", dying)
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        wl.fit_dictionary(d, 32, LAM, checkpoint_dir=ck, checkpoint_every=1, **kw)
    monkeypatch.setattr(sf, "_block", block)
    seen = []
    monkeypatch.setattr(sf, "_block", lambda *a: seen.append(1) or block(*a))
    resumed = wl.fit_dictionary(d, 32, LAM, checkpoint_dir=ck, checkpoint_every=1, **kw)
    assert len(seen) == 10 - 7  # only the blocks not yet done
    assert resumed.resumed_from == 1
    np.testing.assert_array_equal(resumed.atoms, full.atoms)
    np.testing.assert_array_equal(resumed.history.loss, full.history.loss)
    # a finished run continued with a larger budget: its history grows to the new max_epochs
    ck1 = tmp_path / "ck1"
    wl.fit_dictionary(d, 32, LAM, checkpoint_dir=ck1, **{**kw, "max_epochs": 1})
    more = wl.fit_dictionary(d, 32, LAM, checkpoint_dir=ck1, **kw)
    assert more.resumed_from == 1 and more.history.loss.shape == (2,)
    np.testing.assert_array_equal(more.atoms, full.atoms)
    np.testing.assert_array_equal(more.history.loss, full.history.loss)


# --- SAE training from a store -------------------------------------------------------------------


def test_train_sae_from_a_store_in_windows_resumes_exactly(problem, tmp_path):
    X = problem[0].astype(np.float32)
    d = shard_dir(tmp_path, X)
    kw = dict(
        key=jax.random.PRNGKey(0), steps=30, checkpoint_every=10, pool_rows=600, batch_size=32
    )
    full = wl.train_sae(d, 64, LAM, **kw)
    assert full.result == wl.RESULTS.successful and np.isfinite(full.losses).all()
    # window c of the store is chunk c's data
    ref = wl.ActivationStore(d).pools(600)
    windows = [next(ref).copy() for _ in range(3)]
    np.testing.assert_array_equal(windows[1], X[600:1200])  # consecutive rows across shards
    np.testing.assert_array_equal(windows[2], X[:600])  # cycles; the last 300 rows wait a pass
    ck = tmp_path / "ck"
    wl.train_sae(d, 64, LAM, **{**kw, "steps": 20}, checkpoint_dir=ck)
    resumed = wl.train_sae(d, 64, LAM, **kw, checkpoint_dir=ck)
    assert resumed.resumed_from == 20
    np.testing.assert_array_equal(resumed.losses, full.losses)
    np.testing.assert_array_equal(resumed.sae.W_dec, full.sae.W_dec)


# --- devices and processes ----------------------------------------------------------------------


def test_eight_devices_equal_one(problem, tmp_path):
    X, D, b, Z = problem
    np.save(tmp_path / "X.npy", X[:600])
    np.save(tmp_path / "D.npy", D)
    np.save(tmp_path / "b.npy", b)
    script = f"""
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
import widelimit as wl
assert jax.device_count() == 8
X, D, b = (np.load("{tmp_path}/" + n + ".npy") for n in "XDb")
# XLA partitions the same program: it differs from one device's only in the order of sums (so a
# loop may stop one step apart), hence a tight tol
kw = dict(sparse=True, block_rows=100, tol=1e-9, max_steps=5000)
one = wl.encode(D, b, X, {LAM}, **kw)
eight = wl.encode(D, b, X, {LAM}, devices="all", **kw)
assert np.abs(np.asarray(one.todense()) - np.asarray(eight.todense())).max() <= 1e-8
r1 = wl.check_optimality(X, D, one, b, {LAM})
r8 = wl.check_optimality(X, D, one, b, {LAM}, devices="all")
for f in ("code_kkt_per_atom", "atom_stationarity", "bias_residual", "wide_certificate"):
    np.testing.assert_allclose(getattr(r8, f), getattr(r1, f), rtol=1e-10, atol=1e-12)
# the atoms (96 = 8 × 12) and code columns split over the devices instead of the rows
split = wl.encode(D, b, X, {LAM}, devices="all", shard="atoms", **kw)
assert np.abs(np.asarray(one.todense()) - np.asarray(split.todense())).max() <= 1e-8
ra = wl.check_optimality(X, D, one, b, {LAM}, devices="all", shard="atoms")
for f in ("code_kkt_per_atom", "atom_stationarity", "bias_residual", "wide_certificate"):
    np.testing.assert_allclose(getattr(ra, f), getattr(r1, f), rtol=1e-10, atol=1e-12)
try:
    wl.encode(D[:90], b, X, {LAM}, devices="all", shard="atoms", **kw)
    raise AssertionError("90 atoms over 8 devices")
except ValueError as e:
    assert "divisible" in str(e)
# a streamed fit whose minibatches split over the 8 devices (its final codes too) = 1 device's
store = wl.ActivationStore(X, chunk_rows=200)
# code_tol: each device's code solve stops on its own rows' residual (one device's on all rows)
f = dict(key=jax.random.PRNGKey(5), batch_size=40, block_rows=200, max_epochs=2, loss_tol=0,
         stop="loss", code_tol=1e-10, progress=False)
f1 = wl.fit_dictionary(store, 24, {LAM}, **f)
import widelimit._finite.stream_fit as sf
block, spread = sf._block, []
sf._block = lambda cfg, s, X, *a: spread.append(len(X.sharding.device_set)) or block(cfg, s, X, *a)
f8 = wl.fit_dictionary(store, 24, {LAM}, devices="all", **f)
sf._block = block
assert spread and set(spread) == {{8}}, spread  # each block's rows lie on the 8 devices
np.testing.assert_allclose(f8.atoms, f1.atoms, rtol=1e-9, atol=1e-10)
np.testing.assert_allclose(f8.history.loss[:2], f1.history.loss[:2], rtol=1e-10)
np.testing.assert_allclose(float(f8.loss), float(f1.loss), rtol=1e-10)
assert np.abs(np.asarray(f8.codes.todense()) - np.asarray(f1.codes.todense())).max() <= 1e-8
for bad, msg in ((dict(f, batch_size=36), "does not split over 8 devices"),
                 (dict(f, distributed=True), "drop `devices`")):
    try:
        wl.fit_dictionary(store, 24, {LAM}, devices="all", **bad)
        raise AssertionError(msg)
    except ValueError as e:
        assert msg in str(e), e
try:
    wl.fit_dictionary(X, 24, {LAM}, key=jax.random.PRNGKey(5), devices="all")
    raise AssertionError("an array with devices")
except ValueError as e:
    assert "ActivationStore(X)" in str(e), e
t = dict(key=jax.random.PRNGKey(0), steps=20, checkpoint_every=10, batch_size=64)
s1 = wl.train_sae(X, 48, {LAM}, **t)
s8 = wl.train_sae(X, 48, {LAM}, devices="all", **t)  # each minibatch split over 8 devices
np.testing.assert_allclose(s8.losses, s1.losses, rtol=1e-9)
np.testing.assert_allclose(s8.sae.W_dec, s1.sae.W_dec, atol=1e-9)
print("ok")
"""
    env = dict(os.environ, XLA_FLAGS=subprocess_xla_flags(8), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_shard_is_checked(problem):
    X, D, b, _ = problem
    for f in (wl.encode, wl.check_optimality):
        args = (D, b, X[:10], LAM) if f is wl.encode else (X[:10], D, np.zeros((10, 96)), b, LAM)
        with pytest.raises(ValueError, match="needs|pass devices"):
            f(*args, shard="atoms")  # no devices to split the atoms over
        with pytest.raises(ValueError, match="`shard`"):
            f(*args, devices="all", shard="columns")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(problem, tmp_path):
    """``jax.distributed`` with 2 local CPU processes (coordinator on localhost): the wide solve
    over both processes' rows equals one process's, and their codes are the rows of one encode."""
    X, D, _, _ = problem
    X = X[:1000]
    data = shard_dir(tmp_path, X, cuts=(0, 300, 700))
    np.save(tmp_path / "D.npy", D)
    sae0 = wl.train_sae(X, 32, LAM, key=jax.random.PRNGKey(1), steps=5, batch_size=64).sae
    wl.save_saelens(sae0, tmp_path / "sae0")
    worker = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = subprocess_xla_flags()  # one device per process
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                worker,
                str(port),
                "2",
                str(i),
                data,
                str(tmp_path / "D.npy"),
                str(LAM),
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    res = [json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2)]
    ref = wl.solve_wide(X, LAM)
    assert [r["processes"] for r in res] == [2, 2] and [r["rows"] for r in res] == [500, 500]
    for r in res:
        np.testing.assert_allclose(r["objective"], float(ref.objective), rtol=1e-9)
        np.testing.assert_allclose(r["bias"], ref.bias, atol=1e-7)
        assert r["gap"] <= 1e-9
    np.testing.assert_allclose(
        res[0]["code_norms"] + res[1]["code_norms"], ref.code_norms, atol=1e-6
    )
    codes = np.concatenate(
        [wl.load_codes(tmp_path / f"part-{i}").dense_rows(slice(0, 500)) for i in range(2)]
    )
    np.testing.assert_allclose(codes, wl.encode(D, ref.bias, X, LAM, tol=1e-6), atol=1e-5)
    # one SAE trained over both processes' rows = one process holding them all
    one = wl.train_sae(
        X, wl.load_saelens(tmp_path / "sae0"), LAM, key=jax.random.PRNGKey(3), steps=20,
        batch_size=64, checkpoint_every=20,
    )  # fmt: skip
    for r in res:
        np.testing.assert_allclose(r["sae_losses"], one.losses, rtol=1e-6)
        np.testing.assert_allclose(r["sae_W_dec"], one.sae.W_dec, rtol=1e-5, atol=1e-6)
    # two streamed fit epochs: block i of all processes' rows = process 0's and process 1's i-th
    # blocks of 100 rows (one process reading those blocks as shards gives the same fit); K = 80:
    # per-point working sets, sized by the largest of the processes' guesses (one program)
    glob = tmp_path / "global"
    glob.mkdir()
    for i in range(5):
        np.save(glob / f"{i:02d}.npy", np.concatenate([X[100 * i : 100 * i + 100],
                                                       X[500 + 100 * i : 600 + 100 * i]]))  # fmt: skip
    fit = wl.fit_dictionary(
        str(glob), 80, LAM, key=jax.random.PRNGKey(5), init=D[:80], batch_size=50,
        block_rows=200, max_epochs=2, loss_tol=0, stop="loss", code_tol=1e-10,
    )  # fmt: skip
    for r in res:
        assert r["fit_codes_rows"] == 500
        np.testing.assert_allclose(r["fit_losses"], fit.history.loss[:2], rtol=1e-8)
        np.testing.assert_allclose(r["fit_atoms"], fit.atoms, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(r["fit_loss"], float(fit.loss), rtol=1e-8)
        # checkpointed by process 0 into one directory, resumed by both: the same run
        assert r["fit_resumed_from"] == 1 and r["sae_resumed_from"] == 10
        np.testing.assert_allclose(r["fit_resumed_atoms"], r["fit_atoms"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(r["fit_resumed_losses"], r["fit_losses"], rtol=1e-12)
        np.testing.assert_allclose(r["sae_resumed_losses"], r["sae_losses"], rtol=1e-12)
    manifest = json.loads((tmp_path / "fit-checkpoint" / "manifest.json").read_text())
    assert len(manifest["fingerprint"]["processes"]) == 2  # each process's rows


# --- a width sweep of a store ---------------------------------------------------------------------


def test_width_sweep_of_a_store_records_what_its_sparse_codes_hold(problem, tmp_path, monkeypatch):
    """Each width a streamed fit with sparse codes; its record (loss, gap, L0, dead atoms,
    conditions) equals the in-memory record of the same atoms and codes made dense, the split
    tree's masses the dense ones; grow works from a row sample; out_dir resumes the sweep."""
    import widelimit._analysis.sweep as sweep_mod

    X = problem[0].astype(np.float32)
    d = shard_dir(tmp_path, X)
    kw = dict(key=jax.random.PRNGKey(0), batch_size=100, max_epochs=2, block_rows=500,
              progress=False, sample_rows=600)  # fmt: skip
    out = tmp_path / "sweep"
    s = wl.width_sweep(d, [8, 16, 32], LAM, out_dir=str(out), **kw)
    wide = wl.solve_wide(X, LAM)
    assert s.n_rays == int(np.sum(wide.encoded))  # every row's rays, not the sample's
    for t, fit in enumerate(s.fits):
        assert isinstance(fit.codes, wl.SparseCodes) and fit.codes.shape == (1500, s.widths[t])
        dense = fit.codes.todense()
        rec = sweep_mod._record(
            eqx.tree_at(lambda f: f.codes, fit, dense), X, LAM, wide.atoms(X)[wide.encoded][:0],
            1e-2, 1e-3, [float(fit.loss)], float(wide.dual_objective),
        )  # fmt: skip
        for key in ("loss", "gap", "dead", "code_violations", "atom_violations", "hull_violations"):
            np.testing.assert_allclose(getattr(s, key)[t], rec[key], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(s.l0[t], rec["l0"], rtol=1e-6)
        np.testing.assert_allclose(s.tree.mass[t], np.asarray(dense, np.float64).sum(0), rtol=1e-5)
        np.testing.assert_allclose(
            float(fit.loss), float(wl.dictionary_loss(X, fit.atoms, dense, fit.bias, LAM)), rtol=1e-5
        )  # fmt: skip
    parents = np.asarray(s.fits[2].parents)
    assert parents.shape == (32,) and parents.min() >= -1 and parents.max() < 16
    # a rerun reads every width back (sparse codes included) and fits nothing
    monkeypatch.setattr(
        sweep_mod, "fit_dictionary", lambda *a, **k: pytest.fail("refitted a finished width")
    )
    again = wl.width_sweep(d, [8, 16, 32], LAM, out_dir=str(out), **kw)
    np.testing.assert_array_equal(again.loss, s.loss)
    np.testing.assert_array_equal(again.fits[1].codes.values, s.fits[1].codes.values)
    with pytest.raises(ValueError, match="batch_size"):
        wl.width_sweep(d, [8], LAM, key=jax.random.PRNGKey(0))
