"""Issue 20's silent wrong answers, each a regression test: a clear error or the right answer."""

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl


def _data(seed=0, n=300, d=6, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)


def test_huge_lambda_gives_the_mean_and_the_variance():
    for dt in (np.float32, np.float64):
        X = _data(dtype=dt)
        sol = wl.solve_wide(X, 1e20)
        mean = X.astype(np.float64).mean(0)
        var = 0.5 * np.mean(np.sum((X - mean) ** 2, axis=1))
        assert sol.result == wl.RESULTS.successful
        np.testing.assert_allclose(float(sol.objective), var, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(sol.bias), mean, atol=1e-5)


def test_overflow_and_underflow_are_errors_not_successes():
    X = _data()
    for scale in (1e20, 1e-20):  # W ~ 1e40 overflows float32; W ~ 1e-40 is below its normal range
        Xs = (X.astype(np.float64) * scale).astype(np.float32)
        with pytest.raises(RuntimeError, match="outside the range of the dtype"):
            wl.solve_wide(Xs, 2 * scale)
        sol = wl.solve_wide(Xs, 2 * scale, throw=False)
        assert sol.result == wl.RESULTS.out_of_range
    with pytest.raises(RuntimeError, match="outside the range"):
        wl.solve_wide_path((X.astype(np.float64) * 1e20).astype(np.float32), [1e20, 2e20])


def test_huge_and_tiny_scales_inside_the_range_are_exact():
    X = _data()
    ref = wl.solve_wide(X.astype(np.float64), 2.0)
    for scale in (1e17, 1e-15):  # the squares of single entries stay in range, their sums did not
        Xs = (X.astype(np.float64) * scale).astype(np.float32)
        sol = wl.solve_wide(Xs, 2 * scale)
        np.testing.assert_allclose(float(sol.objective), float(ref.objective) * scale**2, rtol=1e-4)
        # float32 certifies W to ~1e-6, which pins b to about sqrt(1e-6) (README, accuracy)
        np.testing.assert_allclose(np.asarray(sol.bias) / scale, np.asarray(ref.bias), atol=5e-3)
        assert float(sol.gap) <= 1e-5


def test_offset_float32_data_converges_like_centred_data():
    X = _data()
    ref = wl.solve_wide(X.astype(np.float64), 2.0)
    for offset in (100.0, 1e4):
        sol = wl.solve_wide(X + np.float32(offset), 2.0)
        assert int(sol.num_steps) < 50
        np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(sol.bias) - offset, np.asarray(ref.bias), atol=5e-3)
        # inside a user's jit the rescue is a branch of one program, not a second call
        traced = jax.jit(lambda Y: wl.solve_wide(Y, 2.0).objective)(X + np.float32(offset))
        np.testing.assert_allclose(float(traced), float(sol.objective), rtol=1e-5)
    path = wl.solve_wide_path(X + np.float32(100), [1.0, 2.0])
    np.testing.assert_allclose(float(path.objective[1]), float(ref.objective), rtol=1e-4)


def test_a_python_list_is_a_matrix():
    X = _data(n=20)
    a = wl.solve_wide(X.tolist(), 1.0)
    b = wl.solve_wide(X, 1.0)
    np.testing.assert_allclose(float(a.objective), float(b.objective), rtol=1e-6)


def test_a_certificate_below_the_dtype_resolution_is_clipped_with_a_warning():
    X = _data()
    with pytest.warns(UserWarning, match="below what float32 resolves"):
        sol = wl.solve_wide(X, 1.0, rtol=1e-10)
    # certified to the clipped rtol, 8·eps(float32) ≈ 9.5e-7, never to the 1e-10 asked for
    assert 1e-10 < 8 * np.finfo(np.float32).eps and float(sol.gap) <= 8 * np.finfo(np.float32).eps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wl.solve_wide(X.astype(np.float64), 1.0, rtol=1e-12)  # float64 resolves it


def test_float64_without_x64_warns(monkeypatch):
    from types import SimpleNamespace

    from widelimit._core import validate

    monkeypatch.setattr(
        validate, "jax", SimpleNamespace(config=SimpleNamespace(jax_enable_x64=False))
    )
    monkeypatch.setattr(validate, "_warned_x64", [])
    with pytest.warns(UserWarning, match="jax_enable_x64 is off"):
        assert validate.float_dtype(np.zeros((2, 2)), "X") == jnp.float32


def test_resume_refuses_another_seed_and_other_data(tmp_path):
    X = _data(n=120, d=5, dtype=np.float64)
    kw = dict(max_epochs=3, progress=False, checkpoint_dir=str(tmp_path))
    wl.fit_dictionary(X, 4, 0.3, key=jax.random.PRNGKey(0), **kw)
    with pytest.raises(ValueError, match="key:"):
        wl.fit_dictionary(X, 4, 0.3, key=jax.random.PRNGKey(1), **kw)
    rev = X.copy()
    rev[:100] = rev[:100][::-1]  # same sum, same sampled rows would not tell them apart
    with pytest.raises(ValueError, match="sha256"):
        wl.fit_dictionary(rev, 4, 0.3, key=jax.random.PRNGKey(0), **kw)
    with pytest.raises(ValueError, match="code_tol: "):
        wl.fit_dictionary(X, 4, 0.3, key=jax.random.PRNGKey(0), code_tol=1e-5, **kw)


def test_sweep_resume_refuses_another_seed(tmp_path):
    X = _data(n=100, d=4, dtype=np.float64)
    kw = dict(out_dir=str(tmp_path), max_epochs=3, progress=False)
    wl.width_sweep(X, [1, 2], 0.3, key=jax.random.PRNGKey(0), **kw)
    with pytest.raises(ValueError, match="key:"):
        wl.width_sweep(X, [1, 2], 0.3, key=jax.random.PRNGKey(5), **kw)


def test_only_jobs_that_checkpoint_hash_their_data(monkeypatch, tmp_path):
    """The fingerprint of a resumable job hashes every byte of X (SHA-256, about 1 s per GB): a
    fit, a streamed fit of an array and a sweep without a checkpoint directory never compute it."""
    from widelimit._core import checkpoint

    hashed, digest = [], checkpoint.digest
    monkeypatch.setattr(checkpoint, "digest", lambda a: hashed.append(np.shape(a)) or digest(a))
    X, key = _data(n=120, d=5), jax.random.PRNGKey(0)
    wl.fit_dictionary(X, 4, 0.3, key=key, max_epochs=3, progress=False)
    store = wl.ActivationStore(X)
    wl.fit_dictionary(store, 4, 0.3, key=key, batch_size=40, max_epochs=2, progress=False)
    wl.width_sweep(X, [1, 2], 0.3, key=key, max_epochs=3, progress=False)
    assert hashed == []
    wl.fit_dictionary(
        X, 4, 0.3, key=key, max_epochs=3, progress=False, checkpoint_dir=str(tmp_path)
    )
    assert (120, 5) in hashed  # the spy sees a checkpointed fit hash X


def test_rerunning_a_finished_fit_returns_it_unchanged(tmp_path):
    X = _data(n=150, d=5, dtype=np.float64)
    kw = dict(key=jax.random.PRNGKey(0), progress=False, checkpoint_dir=str(tmp_path))
    first = wl.fit_dictionary(X, 4, 0.3, max_epochs=200, **kw)
    assert int(first.n_epochs) < 200 and first.stationary()  # it converged on the conditions
    again = wl.fit_dictionary(X, 4, 0.3, max_epochs=200, **kw)
    assert int(again.n_epochs) == int(first.n_epochs)
    np.testing.assert_array_equal(np.asarray(again.codes), np.asarray(first.codes))
    np.testing.assert_array_equal(np.asarray(again.atoms), np.asarray(first.atoms))


def test_cli_refuses_complex_and_nonfinite_data(tmp_path):
    from typer.testing import CliRunner

    from widelimit.cli import app

    runner = CliRunner()
    for name, X in (
        ("c.npy", _data(n=10).astype(np.complex64)),
        ("n.npy", np.full((4, 3), np.nan)),
    ):
        np.save(tmp_path / name, X)
        res = runner.invoke(app, ["wide", str(tmp_path / name), "--lam", "1"])
        assert res.exit_code == 2 and "error" in res.output, res.output
    np.save(tmp_path / "x.npy", _data(n=50))
    res = runner.invoke(app, ["wide", str(tmp_path / "x.npy"), "--lam", "1e20", "--json"])
    assert res.exit_code == 0, res.output
    assert np.isfinite(json.loads(res.output)["objective"])


def test_output_directories_are_exclusive(tmp_path):
    from widelimit._core.lock import dir_lock

    X = _data(n=60, d=4, dtype=np.float64)
    with dir_lock(str(tmp_path / "fit")):  # another writer holds it
        with pytest.raises(RuntimeError, match="in use by another widelimit run"):
            wl.fit_dictionary(X, 3, 0.3, key=jax.random.PRNGKey(0), max_epochs=2, progress=False,
                              checkpoint_dir=str(tmp_path / "fit"))  # fmt: skip
    with dir_lock(str(tmp_path / "sweep")):
        with pytest.raises(RuntimeError, match="in use"):
            wl.width_sweep(X, [1], 0.3, key=jax.random.PRNGKey(0), out_dir=str(tmp_path / "sweep"),
                           max_epochs=2, progress=False)  # fmt: skip
    # released: the same calls now run (the lock of a finished or killed run never lingers)
    wl.fit_dictionary(X, 3, 0.3, key=jax.random.PRNGKey(0), max_epochs=2, progress=False,
                      checkpoint_dir=str(tmp_path / "fit"))  # fmt: skip
    wl.width_sweep(X, [1], 0.3, key=jax.random.PRNGKey(0), out_dir=str(tmp_path / "sweep"),
                   max_epochs=2, progress=False)  # fmt: skip


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, time; from widelimit._core.lock import dir_lock\n"
        f"with dir_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    from widelimit._core.lock import dir_lock

    with pytest.raises(RuntimeError, match=f"pid {p.pid}"):
        with dir_lock(str(tmp_path)):
            pass
    p.kill()
    p.wait()
    with dir_lock(str(tmp_path)):  # SIGKILL released it
        pass


def test_fit_status_says_how_it_ended(tmp_path):
    X = _data(n=150, d=5, dtype=np.float64)
    kw = dict(key=jax.random.PRNGKey(0), progress=False)
    short = wl.fit_dictionary(X, 4, 0.3, max_epochs=2, loss_tol=0, stop="loss", **kw)
    assert short.result == wl.RESULTS.max_steps_reached and not short.converged
    with pytest.raises(RuntimeError, match="did not reach the requested tolerance"):
        wl.fit_dictionary(X, 4, 0.3, max_epochs=2, loss_tol=0, stop="loss", throw=True, **kw)
    done = wl.fit_dictionary(X, 4, 0.3, max_epochs=200, tol=1e-4, throw=True, **kw)
    assert done.converged and int(done.n_epochs) < 200 and done.seconds > 0
    # the flag says whether the first-order conditions hold, whatever stopped the fit
    for f in (
        short,
        done,
        wl.fit_dictionary(X, 4, 0.3, max_epochs=300, loss_tol=0, stop="loss", **kw),
    ):
        rep = wl.check_optimality(X, f.atoms, f.codes, f.bias, 0.3)
        first_order = max(float(rep.code_kkt_max), float(rep.atom_stationarity.max()),
                          float(rep.bias_residual))  # fmt: skip
        assert f.stationary() == (first_order <= 1e-3), first_order
    assert not short.stationary()
    # the recorded residuals are check_optimality's
    rep = wl.check_optimality(X, done.atoms, done.codes, done.bias, 0.3)
    np.testing.assert_allclose(float(done.code_kkt), float(rep.code_kkt_max), rtol=1e-6)
    np.testing.assert_allclose(
        float(done.atom_stationarity), float(rep.atom_stationarity.max()), rtol=1e-6
    )
    np.testing.assert_allclose(float(done.bias_residual), float(rep.bias_residual), rtol=1e-6)
    wl.save_fit(short, str(tmp_path / "f.npz"))
    back = wl.load_fit(str(tmp_path / "f.npz"))
    assert back.result == wl.RESULTS.max_steps_reached
    assert float(back.code_kkt) == pytest.approx(float(short.code_kkt))
    seeds = wl.fit_dictionary_seeds(X, 4, 0.3, keys=jax.random.split(jax.random.PRNGKey(0), 2),
                                    max_epochs=2, loss_tol=0, stop="loss")  # fmt: skip
    assert all(f.result == wl.RESULTS.max_steps_reached for f in seeds)


def test_sweeps_of_a_single_point_or_identical_points_are_exact(tmp_path):
    for X in (_data(n=1), np.ones((6, 4), np.float32)):
        s = wl.width_sweep(X, [1, 2], 0.3, key=jax.random.PRNGKey(0), progress=False)
        np.testing.assert_array_equal(s.loss, 0.0)  # the bias sits on the data: L = W = 0
        np.testing.assert_array_equal(s.gap, 0.0)


def test_bad_output_paths_are_refused_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from widelimit.cli import app

    x = str(tmp_path / "x.npy")
    np.save(x, _data(n=40, d=4))
    (tmp_path / "afile").write_text("")
    (tmp_path / "fitdir" / "fit.npz").mkdir(parents=True)
    (tmp_path / "chk" / "report.png").mkdir(parents=True)
    (tmp_path / "sw" / "loss.png").mkdir(parents=True)
    cases = {
        ("fit", x, "--width", "2", "--lam", "0.3", "-o", str(tmp_path / "fitdir")): "is a directory",
        ("fit", x, "--width", "2", "--lam", "0.3", "-o", str(tmp_path / "afile")): "is a file",
        ("wide", x, "--lam", "0.3", "-o", str(tmp_path / "afile" / "sub")): "is a file",
        ("sweep", x, "--widths", "1", "--lam", "0.3", "-o", str(tmp_path / "sw")): "is a directory",
        ("check", str(tmp_path / "fitdir"), x, "--lam", "0.3", "-o", str(tmp_path / "chk")): "is a",
        ("train", x, "--width", "2", "--arch", "topk", "--k", "1", "-o", str(tmp_path / "afile")): "file",
    }  # fmt: skip
    for args, msg in cases.items():
        res = CliRunner().invoke(app, list(args))
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output, (
            res.output
        )
    assert not (tmp_path / "fitdir" / "checkpoint").exists()  # refused before the fit started
    assert sorted(p.name for p in (tmp_path / "sw").iterdir()) == ["loss.png"]
    # the library's own writers check their directories the same way
    with pytest.raises(ValueError, match="is a file"):
        wl.fit_dictionary(
            _data(), 2, 0.3, key=jax.random.PRNGKey(0), checkpoint_dir=str(tmp_path / "afile")
        )
    with pytest.raises(ValueError, match="is a file"):
        wl.width_sweep(
            _data(), [1], 0.3, key=jax.random.PRNGKey(0), out_dir=str(tmp_path / "afile" / "s")
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_output_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="not writable"):
            wl.fit_dictionary(
                _data(), 2, 0.3, key=jax.random.PRNGKey(0), checkpoint_dir=str(ro / "c")
            )
    finally:
        ro.chmod(0o755)


def test_a_damaged_width_file_is_fitted_again_and_stale_tmp_files_go(tmp_path):
    kw = dict(key=jax.random.PRNGKey(0), progress=False, max_epochs=10, out_dir=str(tmp_path))
    X = _data(n=100, d=4)
    first = wl.width_sweep(X, [1, 2], 0.3, **kw)
    (tmp_path / "width-2.npz").write_bytes(b"PK\x03\x04 damaged outside widelimit")
    (tmp_path / "width-1.npz.tmp").write_bytes(b"left by a killed writer")
    with pytest.warns(UserWarning, match="width 2: .* fitting it again"):
        again = wl.width_sweep(X, [1, 2], 0.3, **kw)
    np.testing.assert_array_equal(again.loss, first.loss)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_killed_before_its_first_state_starts_afresh(tmp_path):
    from widelimit._core import checkpoint

    X = _data(n=100, d=4)
    kw = dict(key=jax.random.PRNGKey(0), progress=False, max_epochs=6, checkpoint_dir=str(tmp_path))
    full = wl.fit_dictionary(X, 3, 0.3, **kw)
    for f in tmp_path.glob("state-*.eqx"):  # the manifest reached the disk, the state did not
        f.unlink()
    again = wl.fit_dictionary(X, 3, 0.3, **kw)
    assert again.resumed_from == 0
    np.testing.assert_array_equal(again.atoms, full.atoms)
    assert checkpoint.saved_capacity(str(tmp_path)) == 6


def test_sae_training_has_a_status_checkpoints_and_resumes_exactly(tmp_path):
    import optax

    X = _data(n=200, d=6)
    kw = dict(key=jax.random.PRNGKey(0), steps=40, checkpoint_every=10, progress=False)
    full = wl.train_sae(X, 8, 0.1, **kw)
    assert full.result == wl.RESULTS.successful and full.resumed_from == 0
    half = wl.train_sae(X, 8, 0.1, **(kw | dict(steps=20)), checkpoint_dir=str(tmp_path))
    assert half.resumed_from == 0
    rest = wl.train_sae(X, 8, 0.1, **kw, checkpoint_dir=str(tmp_path))  # a larger budget continues
    assert rest.resumed_from == 20
    np.testing.assert_array_equal(rest.losses, full.losses)
    for a, b in zip(
        jax.tree_util.tree_leaves(rest.sae), jax.tree_util.tree_leaves(full.sae), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="different problem"):
        wl.train_sae(X, 8, 0.2, **kw, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="more than steps=20"):  # never a longer-trained model
        wl.train_sae(X, 8, 0.1, **(kw | dict(steps=20)), checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="custom `optimizer`"):
        wl.train_sae(X, 8, 0.1, **kw, optimizer=optax.sgd(0.1), checkpoint_dir=str(tmp_path / "o"))
    # divergence is a status (and an error on request), never a silent number
    bad = dict(
        key=jax.random.PRNGKey(0), steps=30, checkpoint_every=10, progress=False, learning_rate=1e30
    )
    blown = wl.train_sae(X, 8, 0.1, **bad)
    assert blown.result == wl.RESULTS.nonfinite
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree_util.tree_leaves(blown.sae))
    with pytest.raises(RuntimeError, match="Non-finite"):
        wl.train_sae(X, 8, 0.1, **bad, throw=True)


def test_a_streamed_solve_out_of_the_dtypes_range_is_not_a_success(tmp_path):
    X = _data(n=600, d=6)
    for name, scale in (("big", 1e20), ("tiny", 1e-20)):
        path = str(tmp_path / f"{name}.npy")
        np.save(path, (X.astype(np.float64) * scale).astype(np.float32))
        sol = wl.solve_wide(path, 2 * scale, throw=False, chunk_rows=128)
        assert sol.result == wl.RESULTS.out_of_range, name
        with pytest.raises(RuntimeError, match="outside the range"):
            wl.solve_wide(path, 2 * scale, chunk_rows=128)
    np.save(str(tmp_path / "ok.npy"), X + 100)  # offset data in range: solved, not refused
    sol = wl.solve_wide(str(tmp_path / "ok.npy"), 2.0, chunk_rows=128)
    ref = wl.solve_wide(X.astype(np.float64) + 100, 2.0)
    np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=1e-5)


def test_writers_refuse_a_directory_where_their_file_goes(tmp_path):
    fit = wl.fit_dictionary(
        _data(n=50, d=4), 2, 0.3, key=jax.random.PRNGKey(0), max_epochs=2, progress=False
    )
    (tmp_path / "f.npz").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        wl.save_fit(fit, str(tmp_path / "f.npz"))
    with pytest.raises(ValueError, match="does not exist"):
        wl.save_fit(fit, str(tmp_path / "nowhere" / "f.npz"))
    assert not list(tmp_path.rglob("*.tmp"))
