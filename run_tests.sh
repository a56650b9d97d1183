#!/usr/bin/env bash
# Set-up (as run_experiments.sh), then the test suite on TensorFlow, then the pruning package's
# own tests again on JAX (not its NumPy criteria, which no backend touches). Extra arguments go to
# both pytest runs.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python -m pytest -q tests "$@"
KERAS_BACKEND=jax python -m pytest -q tests/pruning --ignore=tests/pruning/test_criteria.py "$@"
