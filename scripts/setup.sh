#!/usr/bin/env bash
# Create ./.venv if needed and install algoperf_avg (editable) with the test
# extras. Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
