"""Streaming and multi-device paths agree with the in-memory solve."""

import logging
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from helpers import subprocess_xla_flags

import widelimit as wl


@pytest.fixture
def data(rng):
    return (rng.standard_t(4, size=(5003, 12)) + 0.5).astype(np.float32)


def _agree(a, b, rtol=1e-5):
    np.testing.assert_allclose(float(a.objective), float(b.objective), rtol=rtol)
    np.testing.assert_allclose(np.asarray(a.bias), np.asarray(b.bias), atol=1e-3)
    np.testing.assert_allclose(np.asarray(a.code_norms), np.asarray(b.code_norms), atol=2e-3)
    assert float(a.gap) <= 1e-6


def test_stream_npy_path_memmap_and_chunks(data, tmp_path):
    ref = wl.solve_wide(data, 1.5)
    path = tmp_path / "x.npy"
    np.save(path, data)
    _agree(wl.solve_wide(str(path), 1.5, chunk_rows=1000), ref)
    mm = np.load(path, mmap_mode="r")
    _agree(wl.solve_wide(mm, 1.5, chunk_rows=777), ref)
    chunks = [data[i : i + 600] for i in range(0, len(data), 600)]
    _agree(wl.solve_wide(chunks, 1.5), ref)
    _agree(wl.solve_wide(lambda: iter(chunks), 1.5, chunk_rows=512), ref)


def test_stream_weights_nonneg_and_no_bias(data, tmp_path):
    w = np.random.default_rng(3).uniform(0, 2, len(data))
    path = tmp_path / "x.npy"
    np.save(path, data)
    for kw in (dict(weights=w), dict(nonneg_atoms=True), dict(fit_bias=False)):
        _agree(wl.solve_wide(str(path), 1.5, chunk_rows=999, **kw), wl.solve_wide(data, 1.5, **kw))


def test_stream_bad_inputs(data, tmp_path):
    with pytest.raises(TypeError, match="one-shot"):
        wl.solve_wide((c for c in [data]), 1.0)
    with pytest.raises(ValueError, match="no such file"):
        wl.solve_wide(str(tmp_path / "missing.npy"), 1.0)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file at all")
    with pytest.raises(ValueError, match="not a valid .npy"):
        wl.solve_wide(str(bad), 1.0)
    nan = data.copy()
    nan[4000, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match="NaN"):
        wl.solve_wide(str(tmp_path / "nan.npy"), 1.0, chunk_rows=1000)
    with pytest.raises(ValueError, match="weights"):
        wl.solve_wide([data], 1.0, weights=np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        wl.solve_wide([], 1.0)


def test_sharded_agrees_with_single_device():
    code = textwrap.dedent(
        """
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import widelimit as wl
        assert len(jax.devices()) == 8
        X = np.random.default_rng(0).normal(size=(1001, 6)) + 1
        w = np.random.default_rng(1).uniform(0, 2, 1001)
        for kw in ({}, {"weights": w}, {"nonneg_atoms": True}):
            one = wl.solve_wide(X, 0.8, **kw)
            many = wl.solve_wide(X, 0.8, devices="all", **kw)
            assert len(many.code_norms) == 1001
            np.testing.assert_allclose(float(many.objective), float(one.objective), rtol=1e-9)
            np.testing.assert_allclose(np.asarray(many.bias), np.asarray(one.bias), atol=1e-7)
            np.testing.assert_allclose(np.asarray(many.code_norms), np.asarray(one.code_norms), atol=1e-7)
        print("SHARDED-OK")
        """
    )
    env = dict(os.environ, XLA_FLAGS=subprocess_xla_flags(8), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert "SHARDED-OK" in out.stdout, out.stderr[-3000:]


def test_stream_memmap_slice_reads_the_right_rows(data, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, data)
    mm = np.load(path, mmap_mode="r")[1234:4321]
    _agree(wl.solve_wide(mm, 1.5, chunk_rows=500), wl.solve_wide(data[1234:4321], 1.5))


def test_file_sources_yield_half_chunk_blocks_valid_while_the_next_is_read(data, tmp_path):
    # the streaming pass reads block i+1 while block i is computed on: the two must never share
    # memory. Files (and memmaps of them) are mapped block by block, read-only; a memmap without
    # a known file offset alternates two buffers, so block i+1 may reuse only block i-1's
    from widelimit._core.store import ActivationStore as RowSource

    path = tmp_path / "x.npy"
    np.save(path, data)
    columns = np.load(path, mmap_mode="r")[:, :5]  # not C-contiguous: no file offset
    cases = (
        (str(path), True, data),
        (np.load(path, mmap_mode="r"), True, data),
        (columns, False, data[:, :5]),
    )
    for X, mapped, want in cases:
        src = RowSource(X, chunk_rows=1000)
        assert src.pipelined and src.block_rows == 500
        blocks, copies = [], []
        for blk in src:
            assert not any(np.shares_memory(blk, b) for b in blocks[-1:])
            assert blk.flags.c_contiguous and blk.flags.writeable != mapped
            blocks.append(blk)
            copies.append(blk.copy())
        if not mapped:
            assert len({b.ctypes.data for b in blocks}) == 2
        np.testing.assert_array_equal(np.concatenate(copies), want)
        if mapped:  # the pages of the blocks before last were released, but stay readable
            np.testing.assert_array_equal(np.concatenate(blocks), want)
    chunks = RowSource([data[:700], data[700:]], chunk_rows=1000)
    assert not chunks.pipelined and chunks.block_rows == 1000


def test_truncated_npy_file_is_an_error_before_any_work(data, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 4 * data.shape[1] - 3])
    with pytest.raises(ValueError, match="truncated"):
        wl.solve_wide(str(path), 1.5, chunk_rows=1000)


def test_stream_compiles_nothing_for_a_new_number_of_rows(tmp_path, caplog):
    # the certificate's per-point part is summed block by block, so after one streamed solve
    # another one over a file with a different number of rows (same chunks) compiles nothing
    rng = np.random.default_rng(5)
    for n in (3000, 4500):
        np.save(tmp_path / f"x{n}.npy", (rng.standard_t(3, size=(n, 7)) + 2).astype(np.float32))
    wl.solve_wide(str(tmp_path / "x3000.npy"), 1.5, chunk_rows=1000)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        sol = wl.solve_wide(str(tmp_path / "x4500.npy"), 1.5, chunk_rows=1000)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []
    ref = wl.solve_wide(np.load(tmp_path / "x4500.npy"), 1.5)
    np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=1e-5)
    assert sol.code_norms.shape == (4500,)


def test_a_small_store_streams_in_blocks_of_its_row_bucket(tmp_path, monkeypatch):
    """A store smaller than a block pads its blocks to its row bucket, not to the block (200 rows
    of d = 2 were padded to 4·10⁶-row blocks in every pass): the wide solve, a streamed encode and
    a streamed check see blocks of ``row_bucket(200)`` = 224 rows, and give the in-memory answer."""
    import widelimit._core.paired_blocks as pb
    import widelimit._finite.stream_encode as se
    import widelimit._wide.stream as st
    from widelimit._core.row_buckets import row_bucket

    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 2)) + 1.0
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "0.npy", X[:120])
    np.save(shards / "1.npy", X[120:])
    seen = []

    def spy(module, name, kind, rows_of):
        real = getattr(module, name)

        def counted(*a, **k):
            seen.append((kind, rows_of(*a)))
            return real(*a, **k)

        monkeypatch.setattr(module, name, counted)

    spy(st, "_block_stats", "wide", lambda xb, *a: xb.shape[0])
    spy(se, "_solve_codes", "encode", lambda D, b, xb, *a: xb.shape[0])
    spy(pb, "_flags", "check", lambda xb, zb: xb.shape[0])
    sol = wl.solve_wide(str(shards), 0.3)
    np.testing.assert_allclose(
        float(sol.objective), float(wl.solve_wide(X, 0.3).objective), rtol=1e-9
    )
    D = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    codes = wl.encode(D, sol.bias, str(shards), 0.3, sparse=True, tol=1e-8)
    dense = wl.encode(D, sol.bias, X, 0.3, tol=1e-8)
    np.testing.assert_allclose(np.asarray(codes.todense()), np.asarray(dense), atol=1e-7)
    rep = wl.check_optimality(str(shards), D, codes, sol.bias, 0.3)
    ref = wl.check_optimality(X, D, dense, sol.bias, 0.3)
    for f in ("code_kkt_max", "atom_stationarity", "bias_residual", "wide_certificate"):
        np.testing.assert_allclose(getattr(rep, f), getattr(ref, f), rtol=1e-6, atol=1e-6)
    assert {kind for kind, _ in seen} == {"wide", "encode", "check"}
    assert {rows for _, rows in seen} == {row_bucket(200)} == {224}, seen


def test_in_memory_solve_compiles_nothing_for_a_new_n_in_its_bucket(caplog):
    """Eager in-memory solves pad N with zero-weight rows to ``row_bucket(N)`` (four sizes per
    octave): a new N in the same bucket compiles nothing, and the answer is the unpadded one
    (cvxpy-checked elsewhere) to rounding: the weighted problem of the padded rows (weights 0)
    solved inside the user's jit, where nothing is padded."""
    from widelimit._core.row_buckets import row_bucket

    assert [row_bucket(n) for n in (1, 8, 9, 17, 1000, 1024, 1025, 1281)] == [
        8, 8, 10, 20, 1024, 1024, 1280, 1536,
    ]  # fmt: skip
    assert all(n <= row_bucket(n) < 1.25 * n + 8 for n in range(1, 5000))
    rng = np.random.default_rng(7)
    X = rng.standard_t(3, size=(1001, 6)) + 1.0
    wl.solve_wide(X[:1000], 1.5)  # compiles the bucket of 1000 rows: 1024
    for n in (1001, 990):
        with jax.log_compiles(), caplog.at_level(logging.WARNING):
            caplog.clear()
            sol = wl.solve_wide(X[:n], 1.5)
        assert [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()] == []
        ref = jax.jit(lambda X: wl.solve_wide(X, 1.5))(X[:n])  # traced: solved unpadded
        assert sol.code_norms.shape == sol.encoded.shape == (n,)
        np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(sol.bias), np.asarray(ref.bias), atol=1e-8)
        np.testing.assert_allclose(
            np.asarray(sol.code_norms), np.asarray(ref.code_norms), atol=1e-8
        )
    path = wl.solve_wide_path(X[:1001], [1.0, 2.0])
    assert path.code_norms.shape == (2, 1001)
    ref = jax.jit(lambda X: wl.solve_wide_path(X, [1.0, 2.0]))(X[:1001])
    np.testing.assert_allclose(np.asarray(path.objective), np.asarray(ref.objective), rtol=1e-10)
