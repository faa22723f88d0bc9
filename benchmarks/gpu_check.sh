#!/usr/bin/env bash
# The quick benchmark suite on a GPU machine (when one is lent): the same scripts and JSON as on
# CPU, into benchmarks/results/*_quick.json (or $WIDELIMIT_BENCH_RESULTS); issue 18 asks for the
# quick suite in under 8 minutes. Then, timed apart, the accelerator's rows of issue 17
# (benchmarks/device_rows.py at full size: encode and SAE-step rows/s against the bare product,
# and the solve's row-block experiment).
#
# XLA's GPU autotuning is turned off (--xla_gpu_autotune_level=0) unless WIDELIMIT_GPU_AUTOTUNE=1:
# on an H200 (2026-11-29, autotuning on) device_rows and the first three quick scripts took 8 min,
# most of it compiling (a width-1024 fit's first epoch: 66 s autotuned, 12 s at level 0 on an
# H100). Every JSON records the XLA flags it ran under (machine.xla_flags).
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
if [ "${WIDELIMIT_GPU_AUTOTUNE:-0}" != "1" ]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0"
fi
echo "XLA_FLAGS=${XLA_FLAGS:-}"
start=$(date +%s)
"$PY" -c "import jax; print('devices:', jax.devices())"
failed=""
for s in wide_scaling finite_scaling pair_hull_scaling width_study code_solver architectures absorption; do
  t=$(date +%s)
  # a script that fails (a baseline not installed there, say) is named at the end; the rest run
  timeout 420 "$PY" "benchmarks/$s.py" --quick || failed="$failed $s"
  echo "$s --quick: $(( $(date +%s) - t )) s"
done
echo "quick suite: $(( $(date +%s) - start )) s (goal: under 480 s)"
t=$(date +%s)  # the accelerator's encode and SAE-step rows, at full size (about 3 min on an H200)
timeout 420 "$PY" benchmarks/device_rows.py || failed="$failed device_rows"
echo "device_rows: $(( $(date +%s) - t )) s"
if [ -n "$failed" ]; then echo "failed:$failed"; exit 1; fi
