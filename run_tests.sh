#!/usr/bin/env bash
# Set-up (as run_experiments.sh), then the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python -m pytest -q tests "$@"
