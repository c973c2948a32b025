#!/usr/bin/env bash
# What a CUDA machine is for, in one script sized for a few borrowed minutes:
#   bash scripts/gpu_check.sh OUT [MINUTES]
# Run from the repository root with a python3 that has the project's requirements and a
# CUDA GPU (PYTHON=... picks another interpreter). MINUTES (default 8) bounds the whole
# script; the accuracy grid gets what the other steps leave.
#   1. the suite's CUDA tests (device preprocessing, detection signals on the GPU), and
#      scripts/gpu_step_profile.py (where a training step's time goes);
#   2. a TURN+ run through the CLI with fp16 mixed precision and 4 data-loader workers,
#      whose run folder records stage times and GPU memory;
#   3. `turn bench --detection` on the GPU (in the background, beside step 4);
#   4. `turn bench`, the accuracy grid, with --time-limit: asym40 on every seed first,
#      then sym60 while time is left.
# Both benchmarks write their own section of docs/benchmarks.md (--docs-section). OUT gets
# gpu.log and results.tgz: the docs, the reports, CSVs and the CLI run's JSON (no models,
# no features). Sizes: N_TRAIN (default 60000, all of Fashion-MNIST's training images),
# N_TEST (10000), CLI_N_TRAIN (10000), SEEDS (3), JOBS (4, cells at once on the one GPU);
# DEVICE (cuda) and DOCS (docs/benchmarks.md) for a dry run elsewhere; DETECTION=0 skips step 3
# (its section of the docs stays as it is).
set -uo pipefail
OUT=${1:?usage: bash scripts/gpu_check.sh OUT [MINUTES]}
MINUTES=${2:-8}
PY=${PYTHON:-python3}
N_TRAIN=${N_TRAIN:-60000}
N_TEST=${N_TEST:-10000}
CLI_N_TRAIN=${CLI_N_TRAIN:-10000}
SEEDS=${SEEDS:-3}
JOBS=${JOBS:-4}
METHODS=${METHODS:-"turn+ turn fft-ce fft-elr lp-gce lp-elr dividemix-lp unicon-lp"}
DEVICE=${DEVICE:-cuda}
DOCS=${DOCS:-docs/benchmarks.md}
DETECTION_TITLE="Detection at full scale on a GPU"
START=$(date +%s)
WORK=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TURN_CACHE_DIR="$WORK/cache"
cores=$(nproc)
threads=$(( cores / (JOBS + 1) > 0 ? cores / (JOBS + 1) : 1 ))
left() { echo $(( MINUTES * 60 - ($(date +%s) - START) )); }
step() { echo; echo "=== $* ($(( $(date +%s) - START )) s in, $(left) s left)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch, timm, sklearn, cleanlab, turn_backend.cli; print('torch', torch.__version__, 'cuda',
torch.version.cuda, '| gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0), '| timm', timm.__version__,
'| cleanlab', cleanlab.__version__)" || exit 1

step "1. CUDA tests"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_pipeline.py tests/test_detect.py -k cuda -rs

step "1b. step profile: layouts x precisions, and the engine's epoch"
timeout 120 "$PY" scripts/gpu_step_profile.py "$WORK/step_profile.json"

step "2. TURN+ through the CLI: $CLI_N_TRAIN images, asym40, fp16, 4 workers"
timeout 240 "$PY" -m turn_backend.cli run --data demo --n-train "$CLI_N_TRAIN" --n-test 2000 --noise asymmetric \
    --noise-rate 0.4 --method turn+ --device "$DEVICE" --precision fp16 --workers 4 --projections \
    --out "$WORK/cli-run" --quiet
"$PY" - "$WORK/cli-run" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
for name in ("status.json", "metrics.json", "timings.json"):
    p = run / name
    print(name, json.dumps(json.loads(p.read_text()), default=str)[:1500] if p.exists() else "missing")
EOF

DETECTION_PID=
if [ "${DETECTION:-1}" = 1 ]; then
step "3. turn bench --detection on the GPU, $N_TRAIN images (background)"
# its own feature cache: it extracts in full precision, the grid in mixed precision
TURN_CACHE_DIR="$WORK/detection-cache" OMP_NUM_THREADS=$threads timeout $(( $(left) - 40 )) \
    "$PY" -m turn_backend.cli bench --detection --n-train "$N_TRAIN" --seeds "$SEEDS" --no-small --device "$DEVICE" \
    --threads "$threads" --out "$WORK/detection" --no-docs --docs-section "$DETECTION_TITLE" > "$WORK/detection.log" 2>&1 &
DETECTION_PID=$!
fi

step "4. turn bench, $N_TRAIN images: asym40 on $SEEDS seeds, then sym60 while time is left"
grid() {  # grid MINUTES SETTINGS... -> a time-limited grid into $WORK/bench
    local minutes=$1; shift
    timeout $(( $(left) - 30 )) "$PY" -m turn_backend.cli bench --n-train "$N_TRAIN" --n-test "$N_TEST" \
        --seeds "$SEEDS" --settings "$@" --methods $METHODS --no-small --no-ablation --no-dev \
        --device "$DEVICE" --jobs "$JOBS" --threads "$threads" --time-limit "$minutes" --out "$WORK/bench" \
        --docs "$DOCS" --docs-section "Full scale on a GPU: $N_TRAIN training images"
}
# cells start until 100 s before the end (a running cell, the report and the packing need them);
# a second call reuses the first one's cells and adds sym60
limit() { awk -v s="$(left)" 'BEGIN { printf "%.2f", (s - 100) / 60 }'; }
grid "$(limit)" asym40
if [ "$(left)" -gt 160 ]; then
    grid "$(limit)" asym40 sym60
fi

if [ -n "$DETECTION_PID" ]; then
    step "waiting for the detection grid"
    wait "$DETECTION_PID"; echo "detection exit $?"; tail -5 "$WORK/detection.log"
fi
# written here, not by the background process, so that the two benchmarks never write DOCS at once
[ -f "$WORK/detection/detection.md" ] && "$PY" -c "import sys; from pathlib import Path
from turn_backend.bench.detection import replace_section
replace_section(Path(sys.argv[1]), '## ' + sys.argv[2] + '\n', Path(sys.argv[3]).read_text())" \
    "$DOCS" "$DETECTION_TITLE" "$WORK/detection/detection.md"
step "packing"
cp "$WORK/detection.log" "$WORK/bench/bench.log" "$WORK/step_profile.json" "$OUT/" 2>/dev/null
mkdir -p "$WORK/bench" "$WORK/detection" "$WORK/cli-run"
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.npy' --exclude='*.parquet' --exclude='*.safetensors' \
    --exclude='bench/runs' --exclude='bench/throughput' "$DOCS" "$(dirname "$DOCS")/bench" \
    -C "$WORK" bench detection cli-run
ls -la "$OUT"
step "done"
