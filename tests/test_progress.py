"""Progress of long jobs: silent in logs by default, one newline-terminated line per update with an
ETA when asked (no ``\\r``), and a rich bar only where a person watches."""

import jax
import numpy as np

import widelimit as wl
from widelimit._core.progress import Progress


def test_default_is_silent_when_stderr_is_not_a_terminal(capsys):
    p = Progress(4, "job")  # pytest captures stderr: not a terminal, not a notebook
    p.update(1, loss=0.5)
    p.close()
    assert p.mode == "off" and capsys.readouterr().err == ""


def test_asked_in_a_log_writes_lines_with_eta(capsys):
    p = Progress(4, "job", True)
    assert p.mode == "lines"
    for i in range(1, 5):
        p.update(i, loss=1.0 / i)
    p.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and err.endswith("\n") and len(lines) == 4
    assert lines[0].startswith("job 1/4 [") and "eta " in lines[0] and "loss=1" in lines[0]
    assert "eta 0.0s" in lines[-1]


def test_off_when_disabled(capsys):
    p = Progress(4, "job", False)
    p.update(2)
    assert capsys.readouterr().err == ""


def test_fit_reports_each_epoch_when_asked(capsys):
    X = np.random.default_rng(0).normal(size=(60, 3))
    wl.fit_dictionary(
        X, 2, 0.3, key=jax.random.key(0), max_epochs=3, loss_tol=0, stop="loss", progress=True
    )
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("fit_dictionary")]
    assert len(lines) >= 1 and all("eta" in ln for ln in lines)
    wl.fit_dictionary(X, 2, 0.3, key=jax.random.key(0), max_epochs=3)  # default: silent here
    assert "fit_dictionary" not in capsys.readouterr().err


def test_sweep_reports_epochs_within_each_width_and_records_time(capsys):
    X = np.random.default_rng(1).normal(size=(80, 4))
    s = wl.width_sweep(
        X, [2, 3], 0.3, key=jax.random.key(0), max_epochs=4, loss_tol=0, stop="loss", progress=True
    )
    err = capsys.readouterr().err
    inner = [ln for ln in err.splitlines() if ln.startswith("width_sweep") and "epoch=" in ln]
    assert any("K=2" in ln and "epoch=4" in ln for ln in inner), err
    assert any("K=3" in ln and "epoch=1" in ln for ln in inner), err
    assert list(s.epochs) == [4, 4] and np.all(s.seconds > 0)
    assert np.all(s.compile_seconds >= 0) and np.all(s.compile_seconds <= s.seconds)
    assert s.to_dict()["epochs"] == [4, 4]


def test_fits_record_their_compile_time():
    X = np.random.default_rng(2).normal(size=(70, 5))
    kw = dict(key=jax.random.key(0), max_epochs=3, loss_tol=0, stop="loss", progress=False)
    first = wl.fit_dictionary(X, 11, 0.3, **kw)  # a width no other test compiles
    again = wl.fit_dictionary(X, 11, 0.3, **kw)  # the same shapes: its programs are cached
    assert 0 < first.compile_seconds <= first.seconds
    assert again.compile_seconds < 0.25 * first.compile_seconds
    (seed,) = wl.fit_dictionary_seeds(X, 11, 0.3, keys=jax.random.split(kw["key"], 1), max_epochs=2)
    assert seed.compile_seconds >= 0
