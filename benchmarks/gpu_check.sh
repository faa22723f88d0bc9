#!/usr/bin/env bash
# The quick benchmark suite on a GPU machine (when one is lent): the same scripts and JSON as on
# CPU, into benchmarks/results/*_quick.json (or $WIDELIMIT_BENCH_RESULTS); issue 18 asks for under 8 minutes.
# First the accelerator's rows of issue 17 (benchmarks/device_rows.py, encode and SAE-step rows/s
# against the bare product). On an H200 (2026-11-29) device_rows took about 3 min and the first
# three quick scripts 5 min (compilation, autotuning included): the whole does not fit 8 minutes.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
start=$(date +%s)
"$PY" -c "import jax; print('devices:', jax.devices())"
failed=""
t=$(date +%s)  # the accelerator's encode and SAE-step rows, at full size (about 3 min on an H200)
timeout 300 "$PY" benchmarks/device_rows.py || failed="$failed device_rows"
echo "device_rows: $(( $(date +%s) - t )) s"
for s in wide_scaling finite_scaling pair_hull_scaling width_study code_solver architectures absorption; do
  t=$(date +%s)
  # a script that fails (a baseline not installed there, say) is named at the end; the rest run
  timeout 420 "$PY" "benchmarks/$s.py" --quick || failed="$failed $s"
  echo "$s --quick: $(( $(date +%s) - t )) s"
done
echo "quick suite: $(( $(date +%s) - start )) s"
if [ -n "$failed" ]; then echo "failed:$failed"; exit 1; fi
