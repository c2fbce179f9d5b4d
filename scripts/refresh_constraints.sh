#!/usr/bin/env bash
# Re-resolve pyproject.toml's ranges in a scratch venv and write the versions it got to
# scripts/constraints.txt, which scripts/setup_venv.sh (and so CI) installs from. Run it on
# purpose, then run the whole suite (bash scripts/test.sh) before committing the new file.
# torch and its CUDA wheels stay out: $TORCH_SPEC decides them.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
VENV="$scratch/venv" CONSTRAINTS= bash scripts/setup_venv.sh
{
    echo "# The versions the suite last passed with; written by scripts/refresh_constraints.sh."
    echo "# pyproject.toml keeps loose ranges for users; this file keeps tests reproducible."
    "$scratch/venv/bin/pip" freeze --exclude-editable \
        | grep -viE '^(torch|torchvision|triton|nvidia-[a-z0-9-]*|cuda-[a-z-]*)==' \
        | grep -viE '^embedding-assets'
} > scripts/constraints.txt
echo "wrote scripts/constraints.txt ($(grep -vc '^#' scripts/constraints.txt) packages)"
