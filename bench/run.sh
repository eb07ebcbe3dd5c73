#!/usr/bin/env bash
# Segmentation bench: torchvision eager and organdose on the same weights, same
# threads, one process per config (so peak RSS is per config), interleaved so
# that both see the same machine load.
# Usage: bench/run.sh [OUT_DIR] [CONFIGS...]   (CONFIGS like 18x256 50x512x28)
set -euo pipefail
cd "$(dirname "$0")/.."
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
