"""Issue 20: real CLI processes killed with SIGKILL, then rerun with the same command.

Two kinds of kill points:
- at a file write: ``WIDELIMIT_FAULT_KILL_AT_WRITE="n:phase[:match]"`` makes the process SIGKILL
  itself at its n-th atomic write (of a file whose name contains ``match``) with half the temporary
  file written (``partial``), the temporary file complete but not renamed (``written``), or renamed
  before the directory's fsync (``renamed``);
- at a random time, by this test process.

Each case checks that (1) the rerun's outputs equal an uninterrupted run's (arrays bit for bit;
JSON apart from wall times), (2) no temporary file is left, and (3) at most one unit of work
was lost: finished width files are never rewritten, and a fit or an SAE training resumes from the
last checkpoint written before the kill. ``make test`` runs 21 kill points (about a minute); the
``slow``-marked variant (``pytest -m slow``, in ``make bench``) runs 312.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

PHASES = ("partial", "written", "renamed")
VOLATILE = {"seconds", "compile_seconds", "resumed_from", "figures", "sweep"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xla-cache")  # later processes skip compilation
    e = dict(os.environ, WIDELIMIT_COMPILE_CACHE=str(cache), JAX_PLATFORMS="cpu")
    e.pop("WIDELIMIT_FAULT_KILL_AT_WRITE", None)
    return e


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rays = rng.normal(size=(3, 5))
    X = rng.uniform(0.2, 1.0, (120, 1)) * rays[rng.integers(0, 3, 120)]
    np.save(d / "x.npy", (X + 0.01 * rng.normal(size=X.shape)).astype(np.float32))
    return str(d / "x.npy")


def commands(data):
    return {
        "sweep": ["sweep", data, "--widths", "1,2,3", "--lam", "0.2", "--epochs", "15"],
        "fit": ["fit", data, "--width", "3", "--lam", "0.2", "--epochs", "12"],
        "train": ["train", data, "--width", "6", "--arch", "topk", "--k", "2", "--steps", "60",
                  "--checkpoint-every", "10", "--batch-size", "32"],
    }  # fmt: skip


def _launch(args, out, env, kill_at=None):
    e = dict(env)
    if kill_at is not None:
        e["WIDELIMIT_FAULT_KILL_AT_WRITE"] = kill_at
    cmd = [sys.executable, "-m", "widelimit.cli", *args, "-o", str(out), "--quiet"]
    return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(args, out, env, kill_at=None) -> int:
    p = _launch(args, out, env, kill_at)
    _, err = p.communicate(timeout=300)
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {err.decode()[-2000:]}")
    return p.returncode


def _content(path: Path):
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files if k not in VOLATILE}
    if path.suffix == ".json":
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
    if path.suffix == ".png":
        return path.read_bytes()[:8]  # a complete PNG signature; pixels are matplotlib's business
    return path.read_bytes()


def _outputs(out: Path) -> dict:
    """Every result file under ``out`` (checkpoints and the lock excluded)."""
    return {
        str(p.relative_to(out)): _content(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and "checkpoint" not in p.parts and p.name != ".widelimit.lock"
    }


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        if isinstance(w, dict):
            assert sorted(g) == sorted(w), name
            for k in w:
                np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(w[k]), err_msg=name)
        else:
            assert g == w, name


def _finished_widths(out: Path) -> dict:
    """width file → mtime of the widths complete on disk (both the .npz and the .json)."""
    done = {}
    for j in out.glob("width-*.json"):
        npz = j.with_suffix(".npz")
        if npz.exists():
            done[j.name] = j.stat().st_mtime_ns
            done[npz.name] = npz.stat().st_mtime_ns
    return done


def _no_tmp_left(out: Path):
    assert not [p for p in out.rglob("*.tmp")], "a temporary file was left behind"


@pytest.fixture(scope="module")
def references(tmp_path_factory, env, data):
    """name → the outputs of an uninterrupted run (made on first use)."""
    refs: dict = {}

    class Refs:
        def __getitem__(self, name):
            if name not in refs:
                out = tmp_path_factory.mktemp(f"ref-{name}")
                assert _run(commands(data)[name], out, env) == 0
                refs[name] = _outputs(out)
            return refs[name]

    return Refs()


# what each checkpoint-state write holds, in order (epochs for fit, steps for train): the CLI fit
# saves epoch 0, every 5th epoch, the last (12) and the final state; training every 10 steps
STATE_WRITES = {"fit": [0, 5, 10, 12, 12], "train": [10, 20, 30, 40, 50, 60]}


def _expected_resume(name, n, phase):
    """The epoch/step a rerun must resume from after a kill at the n-th checkpoint-state write:
    the last state complete on disk (the n-th itself once renamed)."""
    writes = STATE_WRITES[name]
    done = n if phase == "renamed" else n - 1
    return writes[done - 1] if done >= 1 else 0


def kill_and_rerun(name, args, ref, tmp, env, kill_at=None, after=None):
    """Kill one run (at a write, or ``after`` seconds), rerun it, check the three promises."""
    out = tmp / "out"
    if out.exists():
        shutil.rmtree(out)
    if after is None:
        rc = _run(args, out, env, kill_at)
    else:
        p = _launch(args, out, env)
        time.sleep(after)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        rc = p.returncode
    finished = _finished_widths(out) if out.exists() else {}
    assert _run(args, out, env) == 0
    _assert_same(_outputs(out), ref)
    _no_tmp_left(out)
    for f, mtime in finished.items():  # at most the width in flight was lost
        assert (out / f).stat().st_mtime_ns == mtime, f"{f} was computed again"
    return rc, out


def _state_kills(name, args, ref, tmp, env, points):
    for n, phase in points:
        rc, out = kill_and_rerun(name, args, ref, tmp, env, kill_at=f"{n}:{phase}:state-")
        if rc != -signal.SIGKILL:
            continue  # fewer checkpoint writes than n: an uninterrupted run
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["resumed_from"] == _expected_resume(name, n, phase), (n, phase)


def sweep_chain(args, ref, tmp, env, points):
    """Kill the sweep at each write in ``points`` in turn, each run resuming the last one's
    directory, then let it finish; a width once finished is never written again."""
    out = tmp / "chain"
    shutil.rmtree(out, ignore_errors=True)
    finished: dict = {}
    for n, phase in points:
        _run(args, out, env, kill_at=f"{n}:{phase}")
        for f, mtime in finished.items():
            assert (out / f).stat().st_mtime_ns == mtime, f"{f} was computed again"
        finished |= _finished_widths(out)
    assert _run(args, out, env) == 0
    _assert_same(_outputs(out), ref)
    _no_tmp_left(out)
    for f, mtime in finished.items():
        assert (out / f).stat().st_mtime_ns == mtime, f"{f} was computed again"


def state_chain(name, args, ref, tmp, env, points):
    """Kill a fit or training at its n-th checkpoint-state write, link after link, each run
    resuming the last one's directory; the run that finishes resumes from the last state that
    reached the disk (so each kill lost at most the interval in flight) and equals ``ref``."""
    out = tmp / "chain"
    shutil.rmtree(out, ignore_errors=True)
    writes = STATE_WRITES[name]
    persisted = 0  # entries of ``writes`` on disk
    for n, phase in points:
        if _run(args, out, env, kill_at=f"{n}:{phase}:state-") == 0:
            persisted = len(writes)
            break
        persisted += n if phase == "renamed" else n - 1
    assert _run(args, out, env) == 0
    _assert_same(_outputs(out), ref)
    _no_tmp_left(out)
    resumed = json.loads((out / f"{name}.json").read_text())["resumed_from"]
    assert resumed == (writes[persisted - 1] if persisted else 0), (points, persisted)


# each phase of a write killed at least once (make bench's slow suite kills hundreds of points)
SWEEP_FAST = [(2, "partial"), (3, "written"), (4, "renamed"), (6, "written"), (1, "renamed")]
STATE_FAST = {
    "fit": [(1, "written"), (1, "renamed"), (2, "partial")],
    "train": [(1, "partial"), (2, "renamed"), (1, "written")],
}


def test_a_sweep_killed_at_its_writes_loses_nothing_finished(references, env, data, tmp_path):
    sweep_chain(commands(data)["sweep"], references["sweep"], tmp_path, env, SWEEP_FAST)


@pytest.mark.parametrize("name", ["fit", "train"])
def test_a_kill_at_a_checkpoint_write_resumes_from_the_last_one(
    name, references, env, data, tmp_path
):
    state_chain(name, commands(data)[name], references[name], tmp_path, env, STATE_FAST[name])


def test_kills_at_random_times(references, env, data, tmp_path):
    rnd = random.Random(0)
    for name in ("sweep", "train"):  # fit: its checkpoint writes are killed above
        kill_and_rerun(
            name, commands(data)[name], references[name], tmp_path, env, after=rnd.uniform(1.5, 4.0)
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sweep", "fit", "train"])
def test_hundreds_of_kill_points(name, references, env, data, tmp_path):
    args, ref = commands(data)[name], references[name]
    rnd = random.Random(1)
    points = [(n, p) for n in range(1, 21) for p in PHASES]
    for n, phase in points:
        kill_and_rerun(name, args, ref, tmp_path, env, kill_at=f"{n}:{phase}")
    if name == "sweep":
        sweep_chain(args, ref, tmp_path, env, rnd.sample(points, 30))
    else:
        _state_kills(name, args, ref, tmp_path, env, [(n, p) for n in range(1, 8) for p in PHASES])
    for _ in range(20):
        kill_and_rerun(name, args, ref, tmp_path, env, after=rnd.uniform(0.5, 6.0))
