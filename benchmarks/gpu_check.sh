#!/usr/bin/env bash
# The quick benchmark suite on a GPU machine (when one is lent): the same scripts and JSON as on
# CPU, into benchmarks/results/*_quick.json (or $WIDELIMIT_BENCH_RESULTS), in under 8 minutes.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
start=$(date +%s)
"$PY" -c "import jax; print('devices:', jax.devices())"
for s in wide_scaling finite_scaling pair_hull_scaling width_study code_solver architectures absorption; do
  t=$(date +%s)
  timeout 420 "$PY" "benchmarks/$s.py" --quick
  echo "$s --quick: $(( $(date +%s) - t )) s"
done
echo "quick suite: $(( $(date +%s) - start )) s"
