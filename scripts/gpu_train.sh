#!/usr/bin/env bash
# Trains the shipped network's architecture on a lent GPU machine (PyTorch
# and torchvision there; no Rust toolchain), from the repository root:
#
#   scripts/gpu_train.sh ORGANDOSE_BIN NIBABEL_WHEEL [PATIENTS] [MINUTES]
#
# ORGANDOSE_BIN: an x86-64 organdose built here (makes the phantom patients;
# any build works). INIT=DIR starts from another model folder of the same
# architecture (default weights/organs), LR sets the AdamW learning rate
# (default 1e-3), SEED0 the first phantom seed (default 7000), TRAIN_ARGS
# extra train.py arguments (e.g. "--focus-classes kidney"), ANATOMY the data
# folder for `phantom --anatomy-data`, the one that holds anatomy/word,
# anatomy/amos, anatomy/icrp110 and anatomy/kits23 (a copy of ../shared/data's
# anatomy/ carried to the device: 6 MB without KiTS23, 57 MB with; without it
# the phantoms fall back to the geometric anatomy with a warning). Leave a device
# call 60-90 s beyond MINUTES for the slice count, validation and export (a
# 2.5-minute run in a 270 s call was killed before it wrote anything).
# Patients: seeds SEED0.., one per process, all cores;
# existing ones in $PH are kept, so a second call on a warm machine reuses
# them. Training continues from weights/organs (same architecture), all
# three planes, contrast CT + the four low-dose CTs per patient; validation on
# 4 % of the patients. The fp16 model folder lands in $OUT (the device tool's
# folder) or /tmp/organdose-gpu-train.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1
WHEEL=$2
N=${3:-64}
MIN=${4:-4.5}
RES=${OUT:-/tmp/organdose-gpu-train}
PH=${PH:-/tmp/organdose-train-phantoms}
mkdir -p "$RES" "$PH"
python3 -c 'import nibabel' 2>/dev/null || {
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEEL" || exit 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
t0=$(date +%s)
seq 0 $((N - 1)) | xargs -P "$(nproc)" -I{} sh -c \
    'd='"$PH"'/s{}; [ -f $d/done ] || { "'"$BIN"'" phantom --out $d --seed $(('"${SEED0:-7000}"' + {})) --count 1 --format nifti '"${ANATOMY:+--anatomy-data $ANATOMY}"' >/dev/null 2>&1 && touch $d/done; }'
# The reader takes patient folders under one root: link them flat.
mkdir -p "$PH/all"
for d in "$PH"/s*/PH*; do ln -sfn "$d" "$PH/all/$(basename "$d")"; done
echo "phantoms: $(ls "$PH/all" | wc -l) patients in $(($(date +%s) - t0)) s" | tee "$RES/phantoms.txt"
W=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
PYTHONUNBUFFERED=1 python3 train/train.py --data phantom:"$PH/all" --data phantom-ldct:"$PH/all" \
    --out "$RES/model" --init "${INIT:-weights/organs}" \
    --layers 1,1,1,1 --block basic --size 256 --fpn-channels 64 --representation 256 \
    --mask-channels 64 --heads-epochs 0 --all-epochs 1000 --all-lr "${LR:-1e-3}" --optimizer adamw \
    --warmup-steps 100 --lr-drop-at 0.75 --rois-per-image 128 --batch-size 16 \
    --val-fraction 0.04 --threads 2 --workers "$W" --shuffle-buffer 64 \
    --max-time-min "$MIN" --seed 11 ${TRAIN_ARGS:-} 2>&1 | tr '\r' '\n' | grep -v '^$' | awk 'NR % 20 == 1 || /Dice|wrote|patients|limit|Error|error|Traceback/' \
    | tee "$RES/train.log"
python3 train/to_fp16.py "$RES/model" 2>&1 | tee -a "$RES/train.log"
ls -l "$RES/model"
echo "total $(($(date +%s) - t0)) s"
