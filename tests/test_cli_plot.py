import json

import matplotlib
import numpy as np
from typer.testing import CliRunner

import widelimit as wl
from widelimit.cli import app
from widelimit.plot import plot_wide

matplotlib.use("Agg")
runner = CliRunner()


def test_demo_writes_figure_and_summary(tmp_path):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "wide_limit.json").read_text())
    assert summary["certified_relative_gap"] <= 1e-6
    assert (tmp_path / "wide_limit.png").stat().st_size > 10_000


def test_wide_command_and_bad_files(tmp_path, rng):
    X = rng.normal(size=(50, 3))
    np.save(tmp_path / "x.npy", X)
    res = runner.invoke(
        app, ["wide", str(tmp_path / "x.npy"), "--lam", "0.5", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o" / "wide.json").read_text())
    np.testing.assert_allclose(out["objective"], float(wl.solve_wide(X, 0.5).objective), rtol=1e-6)
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    for args in (
        ["wide", str(tmp_path / "missing.npy"), "--lam", "1"],
        ["wide", str(tmp_path / "bad.npy"), "--lam", "1"],
        ["wide", str(tmp_path / "x.npy"), "--lam", "-1"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "error" in res.output


def test_plot_wide_has_the_expected_artists(rng):
    X = rng.normal(size=(100, 2))
    sol = wl.solve_wide(X, 0.5)
    fig = plot_wide(X, sol)
    ax = fig.axes[0]
    assert len(ax.collections) == 3  # unencoded, encoded, bias
    assert ax.get_xlabel() == "feature 0" and "gap" in ax.get_title()
