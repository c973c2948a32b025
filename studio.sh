#!/usr/bin/env bash
# TURN Studio: set up if needed, then open the app on http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/streamlit run app/main.py --server.address localhost --server.port "${PORT:-8501}" "$@"
