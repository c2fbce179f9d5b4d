#!/usr/bin/env bash
# Create ./.venv (or $VENV) and install the project with its dev tools; safe to re-run.
# torch/torchvision come first, pinned by $TORCH_SPEC (default: the releases this project is
# tested with; set TORCH_SPEC="torch torchvision" to let pip choose, e.g. for another CUDA).
# Every other package is held to the versions in scripts/constraints.txt, the set the suite
# and CI last passed with, so a new release inside pyproject.toml's ranges cannot change a
# test's result unannounced (scripts/refresh_constraints.sh moves them on purpose;
# CONSTRAINTS= installs from the ranges alone).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
CONSTRAINTS=${CONSTRAINTS-scripts/constraints.txt}
PIN=()
[ -n "$CONSTRAINTS" ] && PIN=(-c "$CONSTRAINTS")
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# PyTorch with its CUDA libraries takes about 6 GB in the venv (more while pip unpacks), and
# pip's cache would hold a second copy of the wheels: check the room first, keep no cache.
install_torch() {
    local free_gb
    free_gb=$(df -Pk "$VENV" | awk 'NR==2 {print int($4 / 1048576)}')
    local need_gb=${TORCH_MIN_FREE_GB:-10}
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "setup_venv: only ${free_gb} GB free under $VENV, PyTorch needs ${need_gb} GB:" \
            "free some disk (or set TORCH_MIN_FREE_GB=0 to try anyway)" >&2
        exit 1
    fi
    "$VENV/bin/pip" install -q --no-cache-dir "${PIN[@]}" $TORCH_SPEC
}
"$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null || install_torch
"$VENV/bin/pip" install -q "${PIN[@]}" -e ".[dev]"
# /atlas's viewer: only the package's static files are used, so none of its own dependencies
# (sentence-transformers, litellm, ...). 0.24 dropped the WebGL 2 fallback that GPU-less
# browsers need, hence the cap.
"$VENV/bin/pip" install -q "${PIN[@]}" --no-deps "embedding-atlas>=0.22,<0.24"
