"""Every benchmark script runs end to end, so that no script rots: ``--quick`` at still smaller
sizes (``WIDELIMIT_BENCH_SMOKE``), each writing its JSON, with the machine it ran on, into a
temporary directory. ``make bench-quick`` runs the real quick sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    line.split(":=", 1)[1].split()
    for line in (ROOT / "Makefile").read_text().splitlines()
    if line.startswith("BENCHMARKS :=")
][0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_at_its_quick_size(script, tmp_path):
    env = dict(
        os.environ,
        WIDELIMIT_BENCH_RESULTS=str(tmp_path),
        WIDELIMIT_BENCH_SMOKE="1",
        MPLBACKEND="Agg",
    )
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (out,) = tmp_path.glob(f"{script}_quick.json")
    record = json.loads(out.read_text())
    fields = ("cpu_model", "cpu_count", "jax", "jaxlib", "backend", "device_kind", "dtype")
    for field in (*fields, "xla_flags"):
        assert field in record["machine"], field


def test_gpu_check_is_valid_bash_and_runs_existing_scripts():
    """``gpu_check.sh`` runs only on a lent GPU: here it is parsed, and every script it names
    exists and is one ``make bench`` runs (so that it cannot rot unnoticed)."""
    path = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    loop = next(line for line in text.splitlines() if line.startswith("for s in"))
    named = loop.split(" in ", 1)[1].split(";")[0].split() + ["device_rows"]
    for script in named:
        assert script in SCRIPTS, script
        assert (ROOT / "benchmarks" / f"{script}.py").exists(), script
    assert "--xla_gpu_autotune_level=0" in text
