#!/usr/bin/env bash
# The whole experiment from a fresh clone: set-up, then train -> prune + fine-tune -> deploy.
# Extra arguments go to every stage, e.g. `./run_experiments.sh --quick`.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
for stage in train_network_dense.py prune_network.py deploy_pruned_model.py; do
  echo "=== $stage"
  start=$SECONDS
  python "$stage" "$@"
  echo "=== $stage took $((SECONDS - start)) s"
done
