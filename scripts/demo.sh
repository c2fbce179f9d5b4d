#!/usr/bin/env bash
# Set up ./.venv and run the main job on the bundled demo (scikit-learn's digits as PNGs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/emb demo
