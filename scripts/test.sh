#!/usr/bin/env bash
# Set up ./.venv, lint, check the Dagster definitions (`dg check defs`) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
VIRTUAL_ENV="$PWD/.venv" .venv/bin/dg check defs
.venv/bin/python -m pytest -q "$@"
