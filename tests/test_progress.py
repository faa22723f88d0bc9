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
    wl.fit_dictionary(X, 2, 0.3, key=jax.random.key(0), max_epochs=3, tol=0.0, progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("fit_dictionary")]
    assert len(lines) >= 1 and all("eta" in ln for ln in lines)
    wl.fit_dictionary(X, 2, 0.3, key=jax.random.key(0), max_epochs=3)  # default: silent here
    assert "fit_dictionary" not in capsys.readouterr().err
