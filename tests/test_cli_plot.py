import json

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from typer.testing import CliRunner

import widelimit as wl
from widelimit import plot
from widelimit.cli import app

matplotlib.use("Agg")
runner = CliRunner()


@pytest.fixture(scope="module")
def rays_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    toy = wl.datasets.rays(jax.random.key(0), n_samples=200, n_rays=3, n_features=5)
    np.save(d / "x.npy", np.asarray(toy.X))
    np.savez(d / "x.npz", a=np.asarray(toy.X), b=np.zeros(3))
    return d


def ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def fails(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "error" in res.output and res.output.count("\n") <= 3, res.output
    return res


def test_demo_sweeps_and_flags_the_hierarchy(tmp_path):
    res = ok(["demo", "--out", str(tmp_path), "--quiet"])
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["gap_closes_at"] == summary["n_rays"] == 6
    assert summary["hierarchy_pair_flagged"]
    for f in summary["figures"]:
        assert (tmp_path / f.split("/")[-1]).stat().st_size > 10_000
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["widths"] == list(
        range(1, 9)
    )
    assert res.output == ""  # --quiet


def test_wide_fit_sweep_check_plot(tmp_path, rays_file):
    x = str(rays_file / "x.npy")
    out = json.loads(
        ok(["wide", x, "--lam", "0.3", "-o", str(tmp_path / "w")])
        and (tmp_path / "w" / "wide.json").read_text()
    )
    np.testing.assert_allclose(
        out["objective"], float(wl.solve_wide(np.load(x), 0.3).objective), rtol=1e-5
    )
    ok(
        [
            "wide",
            str(rays_file / "x.npz"),
            "--key",
            "a",
            "--lam",
            "0.3",
            "--dtype",
            "float64",
            "--quiet",
        ]
    )
    ok(
        [
            "fit",
            x,
            "--width",
            "3",
            "--lam",
            "0.3",
            "-o",
            str(tmp_path / "f"),
            "--no-bias",
            "--quiet",
            "--epochs",
            "30",
        ]
    )
    fit = json.loads((tmp_path / "f" / "fit.json").read_text())
    assert fit["width"] == 3 and fit["gap"] < 1e-3
    assert wl.load_fit(str(tmp_path / "f" / "fit.npz")).atoms.shape == (3, 5)
    res = ok(
        [
            "sweep",
            x,
            "--widths",
            "1,2,3",
            "--lam",
            "0.3",
            "-o",
            str(tmp_path / "s"),
            "--no-bias",
            "--epochs",
            "30",
            "--seed",
            "1",
        ]
    )
    assert "gap to the wide limit closes" in res.output
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["widths"] == [1, 2, 3]
    for f in ("loss.png", "gap.png", "rays_covered.png", "split_tree.png"):
        (tmp_path / "s" / f).unlink()
    ok(["plot", str(tmp_path / "s"), "--quiet"])
    assert (tmp_path / "s" / "split_tree.png").stat().st_size > 5000
    res = ok(["check", str(tmp_path / "s"), x, "--lam", "0.3", "-o", str(tmp_path / "c")])
    assert "optimality report" in res.output
    assert "passed" in json.loads((tmp_path / "c" / "check.json").read_text())
    ok(["check", str(tmp_path / "f"), x, "--lam", "0.3"])
    # a SAELens file: decoder rows not unit-norm, normalised by check
    sae = wl.ReluSAE(jnp.ones((4, 5)), jnp.zeros(4), 2 * jnp.eye(5)[:4], jnp.zeros(5))
    wl.save_saelens(sae, str(tmp_path / "sae"))
    res = ok(["check", str(tmp_path / "sae"), x, "--lam", "0.3", "-o", str(tmp_path / "c2")])
    assert "standard SAE at λ = 0.3" in res.output
    assert json.loads((tmp_path / "c2" / "check.json").read_text())["architecture"] == "standard"
    ok(["check", str(tmp_path / "sae" / "sae_weights.safetensors"), x, "--lam", "0.3"])


def test_bad_files_and_options_fail_cleanly_and_keep_outputs(tmp_path, rays_file):
    x = str(rays_file / "x.npy")
    ok(
        [
            "sweep",
            x,
            "--widths",
            "1",
            "--lam",
            "0.3",
            "-o",
            str(tmp_path / "s"),
            "--quiet",
            "--epochs",
            "5",
        ]
    )
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    np.save(tmp_path / "one_d.npy", np.ones(5))
    np.save(tmp_path / "nan.npy", np.full((4, 5), np.nan))
    np.save(tmp_path / "wrong_d.npy", np.ones((4, 7)))
    (tmp_path / "fake.safetensors").write_bytes(b"nope")
    s = str(tmp_path / "s")
    import shutil

    shutil.copytree(tmp_path / "s", tmp_path / "corrupt")
    (tmp_path / "corrupt" / "width-1.npz").write_bytes(b"PK\x03\x04truncated")
    for args in (
        ["plot", str(tmp_path / "corrupt")],
        ["check", str(tmp_path / "corrupt"), x, "--lam", "0.3"],
        ["wide", str(tmp_path / "missing.npy"), "--lam", "1"],
        ["wide", str(tmp_path / "bad.npy"), "--lam", "1"],
        ["wide", str(tmp_path / "one_d.npy"), "--lam", "1"],
        ["wide", str(tmp_path / "nan.npy"), "--lam", "1"],
        ["wide", str(rays_file / "x.npz"), "--lam", "1"],  # two arrays, no --key
        ["wide", x, "--lam", "-1"],
        ["wide", x, "--lam", "1", "--dtype", "float16"],
        ["fit", x, "--width", "0", "--lam", "0.3", "-o", str(tmp_path / "f")],
        ["sweep", x, "--widths", "2,1", "--lam", "0.3", "-o", s],
        ["sweep", x, "--widths", "a,b", "--lam", "0.3", "-o", s],
        ["sweep", str(tmp_path / "nan.npy"), "--widths", "1", "--lam", "0.3", "-o", s],
        ["sweep", str(tmp_path / "wrong_d.npy"), "--widths", "1", "--lam", "0.3", "-o", s],
        ["check", s, str(tmp_path / "wrong_d.npy"), "--lam", "0.3"],
        ["check", str(tmp_path / "fake.safetensors"), x, "--lam", "0.3"],
        ["check", str(tmp_path / "nowhere"), x, "--lam", "0.3"],
        ["plot", str(tmp_path / "nowhere")],
        ["plot", str(tmp_path)],
    ):
        fails(args)
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before


def test_saelens_weights_without_config_and_fit_confusion(tmp_path, rng):
    sae = wl.ReluSAE(*(jnp.asarray(rng.normal(size=s)) for s in ((6, 4), (6,), (6, 4), (4,))))
    wl.save_saelens(sae, str(tmp_path / "a"))
    back = wl.load_saelens(str(tmp_path / "a"))
    for f in ("W_enc", "b_enc", "W_dec", "b_dec"):
        np.testing.assert_allclose(getattr(back, f), getattr(sae, f), rtol=1e-6)
    from safetensors.numpy import save_file

    # weights alone (what widelimit < 0.2 wrote): the architecture is unknown, so it is an error
    save_file({"W_dec": np.ones((3, 2), np.float32)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="no cfg.json beside it"):
        wl.load_saelens(str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="not a widelimit fit"):
        wl.load_fit(str(tmp_path / "a" / "sae_weights.safetensors"))


def test_plot_wide_has_the_expected_artists(rng):
    X = rng.normal(size=(100, 2))
    sol = wl.solve_wide(X, 0.5)
    fig = plot.plot_wide(X, sol)
    ax = fig.axes[0]
    assert len(ax.collections) == 3  # unencoded, encoded, bias
    assert ax.get_xlabel() == "feature 0" and "gap" in ax.get_title()


def test_pair_and_report_plots(rng):
    panels = wl.datasets.hull_panels(jax.random.key(0), dtype=jnp.float64)
    fig = plot.plot_hull_panels(panels)
    assert [a.get_title() for a in fig.axes] == ["A: passes", "B: fails (unstable)", "C: passes"]
    ax = fig.axes[1]
    assert len(ax.lines) >= 2 + 2  # two red hull segments + axis lines
    assert ax.get_xlabel() == "z_0/μ_0 − 1"
    P = panels["B"]
    rep = wl.check_optimality(P.X, P.atoms, P.codes, None, 0.1)
    with pytest.raises(ValueError, match="from codes"):
        plot.plot_pair_hull(wl.pair_hull(rep, 0, 1))
    fig = plot.plot_report(rep)
    assert len(fig.axes) == 3 and len(fig.axes[0].patches) > 0 and len(fig.axes[2].patches) == 2


def test_sweep_plots(rng):
    toy = wl.datasets.rays(
        jax.random.key(0), n_samples=150, n_rays=3, n_features=4, dtype=jnp.float64
    )
    s = wl.width_sweep(
        toy.X,
        [1, 2, 3],
        0.3,
        key=jax.random.key(0),
        fit_bias=False,
        ground_truth=toy,
        progress=False,
        max_epochs=30,
    )
    f1 = plot.plot_sweep_loss(s)
    assert len(f1.axes[0].lines) == 2 and len(f1.axes[0].patches) == 1  # L(K), W line, band
    f2 = plot.plot_sweep_gap(s)
    assert f2.axes[0].get_yscale() == "log" and len(f2.axes[0].lines[0].get_xdata()) == 3
    f3 = plot.plot_rays_covered(s)
    np.testing.assert_array_equal(f3.axes[0].lines[0].get_ydata(), s.rays_covered)
    f4 = plot.plot_split_tree(s)
    assert [t.get_text() for t in f4.axes[0].get_yticklabels()] == ["K=1", "K=2", "K=3"]
    assert len(f4.axes[0].collections) == 3  # one row of nodes per width


def test_cli_keeps_a_persistent_compilation_cache(tmp_path, rays_file):
    import os
    import subprocess
    import sys

    cache = tmp_path / "xla"
    env = dict(os.environ, WIDELIMIT_COMPILE_CACHE=str(cache), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "widelimit.cli", "wide", str(rays_file / "x.npy"), "--lam", "0.3"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert entries, "no compiled program was cached"
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries  # read, not rewritten


def test_cli_fixes_of_issue_15(tmp_path, rays_file):
    """--json on stdout; rich does not eat the report's [ok ] marks; flags take no value; a sentence
    for a gap that never closes; a fingerprint mismatch names the differing field."""
    res = ok(["wide", str(rays_file / "x.npy"), "--lam", "0.5", "--json"])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["lam"] == 0.5 and summary["gap"] >= 0
    out = tmp_path / "fit"
    res = ok(["fit", str(rays_file / "x.npy"), "--width", "3", "--lam", "0.3", "-o", str(out)])
    assert "[ok ]" in res.output or "[FAIL]" in res.output
    assert "] codes (KKT)" in res.output and "  [" in res.output
    res = runner.invoke(app, ["wide", str(rays_file / "x.npy"), "--lam", "0.5", "--quiet", "true"])
    assert res.exit_code == 2  # a flag: "true" is an unexpected extra argument
    from widelimit.cli import _closes_sentence

    assert "None" not in _closes_sentence(None) and "K = 4" in _closes_sentence(4)
    res = fails(["fit", str(rays_file / "x.npy"), "--width", "3", "--lam", "0.4", "-o", str(out)])
    assert "lam: 0.3" in res.output and "→ 0.4" in res.output


def test_check_reads_every_saelens_architecture_as_itself(tmp_path):
    import pathlib

    fix = pathlib.Path(__file__).parent / "fixtures" / "saelens"
    x = str(tmp_path / "x.npy")
    np.save(x, np.load(fix / "topk" / "expected.npz")["X"].astype(np.float32))
    res = ok(["check", str(fix / "topk"), x, "--lam", "1.0", "-o", str(tmp_path / "c")])
    assert "topk SAE at λ = 1" in res.output and "n/a" in res.output
    rec = json.loads((tmp_path / "c" / "check.json").read_text())
    assert rec["architecture"] == "topk" and rec["applies"]["codes"] == "not necessary"
    ok(["check", str(fix / "gated"), x, "--lam", "1.0"])
    # a TopK SAE implies no positive λ (unshrunk codes): a clear error that names --lam
    res = fails(["check", str(fix / "topk"), x])
    assert "--lam" in res.output
    fails(["check", str(fix / "topk" / "cfg.json"), x, "--lam", "1"])


def test_a_file_over_the_stream_limit_is_streamed(tmp_path, rays_file, monkeypatch):
    """A .npy file larger than ``STREAM_BYTES`` is read as an ``ActivationStore`` (never loaded
    whole) by `wide` and `sweep`; its answer is the in-memory one."""
    from widelimit import cli

    X = np.load(rays_file / "x.npy")
    small = ["wide", str(rays_file / "x.npy"), "--lam", "0.3", "--json"]
    stores = []
    real = wl.ActivationStore
    monkeypatch.setattr(wl, "ActivationStore", lambda *a, **k: stores.append(a) or real(*a, **k))
    loaded = json.loads(ok(small).output)
    assert not stores  # under the limit: loaded
    monkeypatch.setattr(cli, "STREAM_BYTES", X.nbytes // 2)
    streamed = json.loads(ok(small).output)
    assert stores == [(str(rays_file / "x.npy"),)]
    np.testing.assert_allclose(streamed["objective"], loaded["objective"], rtol=1e-6)
    assert streamed["n_samples"] == loaded["n_samples"] == len(X)
    sweep = ["sweep", str(rays_file / "x.npy"), "--widths", "2", "--lam", "0.3", "--epochs", "2"]
    assert "over 1 GiB" in fails([*sweep, "-o", str(tmp_path / "s0")]).output


def test_wide_streams_a_directory_of_shards(tmp_path, rays_file):
    X = np.load(rays_file / "x.npy")
    shards = tmp_path / "cache"
    shards.mkdir()
    np.save(shards / "0.npy", X[:100])
    np.save(shards / "1.npy", X[100:])
    ok(["wide", str(shards), "--lam", "0.3", "-o", str(tmp_path / "w")])
    out = json.loads((tmp_path / "w" / "wide.json").read_text())
    assert out["n_samples"] == len(X)
    np.testing.assert_allclose(out["objective"], float(wl.solve_wide(X, 0.3).objective), rtol=1e-5)
    np.save(shards / "2.npy", X[:5, :1])  # another width: a one-line error naming the shard
    assert "2.npy" in fails(["wide", str(shards), "--lam", "0.3"]).output
    # a sweep of the shards: streamed minibatch fits with sparse codes
    sweep = ["sweep", str(shards), "--widths", "2,4", "--lam", "0.3", "--epochs", "3"]
    assert "--batch-size" in fails([*sweep, "-o", str(tmp_path / "s0")]).output
    (shards / "2.npy").unlink()
    ok([*sweep, "--batch-size", "50", "-o", str(tmp_path / "s"), "--quiet"])
    s = wl.load_sweep(str(tmp_path / "s"))
    assert list(s.widths) == [2, 4] and isinstance(s.fits[1].codes, wl.SparseCodes)
    assert s.fits[1].codes.shape == (len(X), 4)
    # one streamed fit of the shards: its sparse codes saved, their L0 and check reported; it is
    # the library's streamed fit with the same settings
    fit = ["fit", str(shards), "--width", "4", "--lam", "0.3", "--epochs", "3", "--quiet"]
    assert "--batch-size" in fails([*fit, "-o", str(tmp_path / "f0")]).output
    ok([*fit, "--batch-size", "50", "-o", str(tmp_path / "f")])
    summary = json.loads((tmp_path / "f" / "fit.json").read_text())
    saved = wl.load_fit(str(tmp_path / "f" / "fit.npz"))
    assert isinstance(saved.codes, wl.SparseCodes) and saved.codes.shape == (len(X), 4)
    lib = wl.fit_dictionary(
        wl.ActivationStore(str(shards)), 4, 0.3, key=jax.random.key(0), batch_size=50,
        max_epochs=3, progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(summary["loss"], float(lib.loss), rtol=1e-6)
    dense = np.asarray(saved.codes.todense())
    assert summary["l0"] == pytest.approx((dense > 0).sum(1).mean())
    assert summary["epochs"] == int(lib.n_epochs) and "passed" in summary
