#!/usr/bin/env bash
# Segmentation bench: torchvision eager and organdose on the same weights, same
# threads, one process per config (so peak RSS is per config), interleaved so
# that both see the same machine load.
# Usage: bench/run.sh [OUT_DIR] [CONFIGS...]   (CONFIGS like 18x256 50x512x28)
#        bench/run.sh OUT_DIR model:weights/organs CT.nii.gz   (a trained model on real slices)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${2:-}" != "${2#model:}" ]; then
  OUT=$1 MODEL=${2#model:} CT=$3
  THREADS=${THREADS:-2} BATCH=${BATCH:-4} REPS=${REPS:-4}
  cargo build --release --example seg_bench
  python3 bench/torchvision_bench.py "$OUT" "$THREADS" "$BATCH" "$REPS" "model:$MODEL" "$CT" 2>/dev/null
  RAYON_NUM_THREADS=$THREADS target/release/examples/seg_bench "$MODEL" "$BATCH" "$REPS" "$OUT/input.f32"
  echo "ratio line in the whole-study bench: RAYON_NUM_THREADS=$THREADS organdose bench --weights $MODEL --torchvision $OUT"
  exit 0
fi
OUT=${1:-/tmp/organdose-bench}
shift || true
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(18x256 18x512 50x256 50x512 50x512x28)
THREADS=2 BATCH=4 REPS=${REPS:-4}
cargo build --release --example seg_bench
for c in "${CONFIGS[@]}"; do
  IFS=x read -r depth size pool <<<"$c"
  name="r${depth}_${size}"
  [ -n "${pool:-}" ] && [ "$pool" != 7 ] && name="${name}_box${pool}"
  python3 bench/torchvision_bench.py "$OUT" "$THREADS" "$BATCH" "$REPS" "$c" 2>/dev/null
  RAYON_NUM_THREADS=$THREADS target/release/examples/seg_bench "$OUT/$name" "$BATCH" "$REPS"
done
