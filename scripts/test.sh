#!/usr/bin/env bash
# Set up ./.venv, lint, check the Dagster definitions and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/dagster definitions validate -w workspace.yaml
.venv/bin/python -m pytest -q "$@"
