#!/usr/bin/env bash
# A separate virtual environment with a Label Studio server and its SDK, for the round-trip
# test (tests/test_labelstudio_server.py). Label Studio pins its own Django, pyarrow, pytz
# and more, so it never goes into the product's .venv: TURN Studio reads and writes Label
# Studio's plain JSON files and never imports it. Idempotent: quick when the venv is there.
#   bash scripts/labelstudio_env.sh          # -> .venv-labelstudio (LABELSTUDIO_VENV overrides)
set -euo pipefail
cd "$(dirname "$0")/.."

LABEL_STUDIO_VERSION=1.23.2
SDK_VERSION=2.1.2
venv="${LABELSTUDIO_VENV:-.venv-labelstudio}"
stamp="$venv/.labelstudio-$LABEL_STUDIO_VERSION-sdk-$SDK_VERSION"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "labelstudio_env: creating $venv (label-studio $LABEL_STUDIO_VERSION, label-studio-sdk $SDK_VERSION; a few minutes)"
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "label-studio==$LABEL_STUDIO_VERSION" "label-studio-sdk==$SDK_VERSION"
touch "$stamp"
echo "labelstudio_env: ready"
