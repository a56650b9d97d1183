#!/usr/bin/env bash
# Set-up (as run_experiments.sh), then the test suite on TensorFlow, and the pruning package's
# own tests again on JAX (not its NumPy criteria, which no backend touches) and its mechanics on
# PyTorch. Extra arguments go to every pytest run.
#
# Two lanes at once, one per core of CI's two: the scripts' tests (tests/scripts) and the
# package's install as the README gives it (test_readme: a fresh virtualenv), then its mechanics
# on PyTorch, then `shrink` and the regularizers on JAX, beside the others on TensorFlow, then
# the rest of the package on JAX (docs/tests.md for the times). The second lane's output is
# shown when both have ended.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
# One thread per op in each lane: two lanes on two cores, with each backend's thread pool sized
# to both cores, fought: each lane took 10-12% longer (docs/tests.md).
export TF_NUM_INTRAOP_THREADS=1 OMP_NUM_THREADS=1 \
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
log=$(mktemp)
numpy_only=(--ignore=tests/pruning/test_criteria.py --ignore=tests/pruning/test_criteria_properties.py)
# the package's mechanics (masks through every setup, schedules, layouts, the properties), run on
# all three backends; the rest of tests/pruning on JAX too
mechanics=(tests/pruning/test_{training_setups,properties,layouts,callbacks,prune}.py)
second_lane_jax=(tests/pruning/test_{shrink,regularizers,sensitivity}.py)
second_lane_tf=(tests/scripts tests/pruning/test_readme.py)
{ python -m pytest -q -p no:cacheprovider "${second_lane_tf[@]}" "$@" || status=$?
  KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider \
    "${mechanics[@]}" "$@" || status=$?
  KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "${second_lane_jax[@]}" "$@" \
    || status=$?
  exit "${status:-0}"; } > "$log" 2>&1 &
scripts=$!
trap 'kill "$scripts" 2>/dev/null || true; rm -f "$log"' EXIT
status=0
python -m pytest -q tests "${second_lane_tf[@]/#/--ignore=}" "$@" || status=$?
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider tests/pruning "${numpy_only[@]}" \
  "${second_lane_jax[@]/#/--ignore=}" "$@" || status=$?
wait "$scripts" || status=$?
echo "tests/scripts and test_readme, then the mechanics on PyTorch, then shrink on JAX" \
  "(run beside the above):"
cat "$log"
exit "$status"
