#!/usr/bin/env bash
# Set-up (as run_experiments.sh), then the test suite on TensorFlow, then the pruning package's
# own tests again on JAX (not its NumPy criteria, which no backend touches). Extra arguments go to
# every pytest run.
#
# Two pytest runs at once, one per core of CI's two: the scripts' tests (tests/scripts: the
# stages as subprocesses, most of their time one core starting TensorFlow) beside the others on
# TensorFlow and then on JAX: 440 s for all of it on a 2-core AMD EPYC against 816 s one after
# the other (docs/tests.md). The scripts' output is shown when both have ended.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
log=$(mktemp)
python -m pytest -q -p no:cacheprovider tests/scripts "$@" > "$log" 2>&1 &
scripts=$!
trap 'kill "$scripts" 2>/dev/null || true; rm -f "$log"' EXIT
status=0
python -m pytest -q tests --ignore=tests/scripts "$@" || status=$?
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider tests/pruning \
  --ignore=tests/pruning/test_criteria.py "$@" || status=$?
wait "$scripts" || status=$?
echo "tests/scripts (run beside the above):"
cat "$log"
exit "$status"
