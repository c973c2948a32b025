#!/usr/bin/env bash
# The README's test command: set up whatever is missing (scripts/setup.sh is idempotent and
# quick when everything is there), lint with ruff (its config: pyproject.toml), then run the
# tests. Arguments go to pytest, e.g.
#   bash scripts/test.sh tests/test_bench.py -k grid -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
