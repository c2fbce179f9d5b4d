#!/usr/bin/env bash
# Set up ./.venv, lint, check the Dagster definitions (`dg check defs`) and run the whole test
# suite: every tier (unit, integration, e2e; tests/tiers.py decides by what a test uses), on
# $TEST_WORKERS processes (default 2, pytest-xdist, one test file per worker at a time, in the
# order conftest.py gives: the heaviest tier first, so no long file is left to run alone at the
# end; xdist's own reorder by test count would do just that), with why each skipped test
# skipped and the 25 slowest tests listed at the end. Extra arguments go to pytest:
#   bash scripts/test.sh -m unit           # the quick loop while working (about 2 minutes)
#   bash scripts/test.sh -m "not e2e"      # without dagster dev, Chromium, Ray and S3
#   TEST_WORKERS=0 bash scripts/test.sh    # in one process
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
VIRTUAL_ENV="$PWD/.venv" .venv/bin/dg check defs
.venv/bin/python -m pytest -q -rs --durations=25 -n "${TEST_WORKERS:-2}" --dist loadfile \
    --no-loadscope-reorder "$@"
