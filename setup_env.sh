# Set-up shared by run_experiments.sh and run_tests.sh (sourced, not run): a virtualenv in .venv
# with requirements.txt and the pruning package (editable) installed, activated, and MNIST
# fetched and verified.
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv ..."
  "${PYTHON:-python3}" -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last successful install.
if ! cmp -s requirements.txt .venv/installed-requirements.txt; then
  echo "installing requirements.txt into .venv (first run: a few minutes) ..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  cp requirements.txt .venv/installed-requirements.txt
fi
# The pruning package itself, editable, as a user would install it (pyproject.toml).
if ! cmp -s pyproject.toml .venv/installed-pyproject.toml; then
  .venv/bin/python -m pip install --quiet --no-deps --editable .
  cp pyproject.toml .venv/installed-pyproject.toml
fi
source .venv/bin/activate
python -m datasets.mnist 2>&1 | grep -v -E "^(I0000|E0000|WARNING: All log)|^To enable the following" || true
