#!/usr/bin/env bash
# TURN Studio: set up if needed, then open the app on http://localhost:8501
set -euo pipefail
# Relative paths typed in the app (and a relative TURN_RUNS_DIR) are read from where this was started.
export TURN_START_DIR="${TURN_START_DIR:-$PWD}"
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/streamlit run app/main.py --server.address localhost --server.port "${PORT:-8501}" "$@"
