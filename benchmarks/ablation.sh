#!/usr/bin/env bash
# Stabiliser ablation at 64²: each row adds one option to the one above, all at the same images seen.
#   bash benchmarks/ablation.sh ../shared/data/faces-aaf-128.zip 300000 runs/ablation [N_FAKE] [N_REAL]
#   PRESET=quick bash benchmarks/ablation.sh ...      # the same options on the 32² net
# Trains every variant in turn (seed 0), then appends one row per variant to docs/benchmarks.md
# via benchmarks/quality.py (FID/KID/PR/DC/memorization of N_FAKE generated vs N_REAL training faces).
set -euo pipefail
DATA=$1 IMAGES=$2 ROOT=$3 NFAKE=${4:-10000} NREAL=${5:-}
PY=${PYTHON:-python} PRESET=${PRESET:-dcgan64}
base="$DATA -p $PRESET --max-images $IMAGES --seed 0 --no-progress"
declare -a names=(classic +sn+hinge +ttur +ema +diffaug+flip)
declare -a flags=(
  ""
  "--d-norm spectral --loss hinge"
  "--d-norm spectral --loss hinge --lr-g 1e-4 --lr-d 4e-4"
  "--d-norm spectral --loss hinge --lr-g 1e-4 --lr-d 4e-4 --ema 0.999"
  "--d-norm spectral --loss hinge --lr-g 1e-4 --lr-d 4e-4 --ema 0.999 --augment color,translation,cutout --flip"
)
for i in "${!names[@]}"; do
  out="$ROOT/${names[$i]}"
  [ -e "$out/config.json" ] || $PY -m facegan train $base ${flags[$i]} --out "$out"
done
for i in "${!names[@]}"; do
  $PY benchmarks/quality.py --data "$DATA" --run "$ROOT/${names[$i]}" -n "$NFAKE" ${NREAL:+--n-real $NREAL} \
    --name "ablation $PRESET ${names[$i]} (\`${flags[$i]:-classic}\`)"
done
