#!/usr/bin/env bash
# The GPU check of issue 8, for a session that has the device machine: run it
# there from the repository root, with what scripts/build_gpu_dist.sh built
# here (carry target/gpu-dist.tar.xz; a dev-profile build of it was 13 MB):
#
#   scripts/gpu_check.sh [DIST]       # DIST: the .tar.xz or a folder with
#                                     # organdose + gpu_parity (cuda builds)
#
# Steps: the card; the GPU/CPU parity tests (ORGANDOSE_REQUIRE_GPU=1, so they
# cannot pass by skipping); a model folder (WEIGHTS=DIR, else a random-weight
# ResNet-50 FPN at 256 from bench/torchvision_bench.py when torchvision is
# there, else the tiny test fixture); `organdose bench` on cuda (full-size
# and small phantom) and cpu (small phantom, axial only: a full CPU run takes
# minutes); `organdose run --device cuda` and `--device cpu` on the small
# phantom with the same model, summaries compared (issue 20); then one table. Logs and JSON go to $OUT (the device tool's
# folder) or /tmp/organdose-gpu-check. Budget: about 7 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
DIST=${1:-target/gpu-dist.tar.xz}
RES=${OUT:-/tmp/organdose-gpu-check}
mkdir -p "$RES"
WORK=$(mktemp -d)
if [ -f "$DIST" ]; then
    tar -xJf "$DIST" -C "$WORK" || { echo "cannot unpack $DIST"; exit 2; }
    BIN=$WORK
else
    BIN=$DIST
fi
for b in organdose gpu_parity; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (build with scripts/build_gpu_dist.sh)"; exit 2; }
done

# libcuda.so.1 comes with the driver; cuBLAS, cuRAND, cudart and NVRTC (CUDA
# 13) from the nvidia/ wheels PyTorch installed on the lent machines.
NV=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [ -n "$NV" ]; then
    LIBS=$(find "$NV" -maxdepth 3 -type d -name lib | tr '\n' ':')
    export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
fi
echo "== card"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
if ldd "$BIN/organdose" | grep 'not found'; then
    echo "organdose: libraries not found (above); LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi

echo "== parity tests (GPU vs CPU twin)"
ORGANDOSE_REQUIRE_GPU=1 timeout "${PARITY_TIMEOUT:-300}" "$BIN/gpu_parity" gpu_parity:: --test-threads=1 --nocapture \
    >"$RES/parity.log" 2>&1
PARITY_RC=$?
grep -E "^GPU:|max relative error|SKIP|panicked|test result" "$RES/parity.log"

echo "== model"
MODEL=${WEIGHTS:-}
KIND="given"
if [ -z "$MODEL" ]; then
    if timeout 120 python3 bench/torchvision_bench.py "$WORK/models" 8 1 1 50x256 >"$RES/model.log" 2>&1 \
        && [ -f "$WORK/models/r50_256/model.toml" ]; then
        MODEL=$WORK/models/r50_256
        KIND="random-weight ResNet-50 FPN, 256 px (torchvision)"
    else
        MODEL=$WORK/fixture
        mkdir -p "$MODEL"
        cp tests/data/seg/model.toml "$MODEL/"
        gunzip -c tests/data/seg/weights.safetensors.gz >"$MODEL/weights.safetensors"
        KIND="test fixture (tiny ResNet; latency NOT representative)"
    fi
fi
echo "model: $MODEL ($KIND)" | tee "$RES/model.txt"

echo "== phantom studies"
"$BIN/organdose" phantom --out "$WORK/full" --seed 8 >"$RES/phantom.log" 2>&1
"$BIN/organdose" phantom --out "$WORK/small" --seed 8 --small >>"$RES/phantom.log" 2>&1
FULL=$(ls -d "$WORK"/full/*/ | head -1)
SMALL=$(ls -d "$WORK"/small/*/ | head -1)

run_bench() { # name timeout args...
    local name=$1 t=$2
    shift 2
    echo "-- bench $name"
    timeout "$t" "$BIN/organdose" bench "$@" --weights "$MODEL" --json "$RES/$name.json" \
        >"$RES/$name.log" 2>&1
    local rc=$?
    echo "$rc" >"$RES/$name.rc"
    echo "   exit $rc$([ $rc = 124 ] && echo " (timed out after $t s; the rows it finished are in the log)") (log $RES/$name.log)"
}
run_bench cuda_full "${BENCH_CUDA_TIMEOUT:-240}" --device cuda --study "$FULL"
run_bench cuda_small "${BENCH_CUDA_SMALL_TIMEOUT:-120}" --device cuda --study "$SMALL"
run_bench cpu_small_axial "${BENCH_CPU_TIMEOUT:-240}" --device cpu --study "$SMALL" --planes axial

echo "== organdose run --device cuda vs --device cpu (issue 20: one engine)"
# The production path (pipeline::run_study) on both devices, same model and
# study, axial only so the CPU run stays short; the summaries must agree.
printf '[segment]\nplanes = "axial"\n' >"$WORK/axial.toml"
RUN_RC=0
for d in cuda cpu; do
    timeout "${RUN_TIMEOUT:-300}" "$BIN/organdose" run "$SMALL" --weights "$MODEL" --no-dicom \
        --config "$WORK/axial.toml" --device "$d" -o "$RES/run_$d" >"$RES/run_$d.log" 2>&1
    rc=$?
    echo "   run --device $d: exit $rc (log $RES/run_$d.log)"
    [ $rc = 0 ] || RUN_RC=$rc
done
if [ $RUN_RC = 0 ]; then
    python3 - "$RES/run_cuda/dose_summary.json" "$RES/run_cpu/dose_summary.json" <<'PY' | tee "$RES/run_compare.txt"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def organs(s):
    o = s.get("organs", {})
    return o if isinstance(o, dict) else {x.get("name"): x for x in o}
oa, ob = organs(a), organs(b)
worst = 0.0
print(f"{'organ':<14} {'mass cuda':>10} {'mass cpu':>10} {'dose cuda':>10} {'dose cpu':>10} {'rel diff':>9}")
for n in sorted(set(oa) | set(ob)):
    if n not in oa or n not in ob:
        print(f"{n:<14} only on {'cuda' if n in oa else 'cpu'}")
        worst = float("inf")
        continue
    x, y = oa[n], ob[n]
    rel = max(abs(x["mass_g"] - y["mass_g"]) / max(abs(y["mass_g"]), 1e-9),
              abs(x["mean_dose_gy"] - y["mean_dose_gy"]) / max(abs(y["mean_dose_gy"]), 1e-9))
    worst = max(worst, rel)
    print(f"{n:<14} {x['mass_g']:>10.2f} {y['mass_g']:>10.2f} {x['mean_dose_gy']:>10.4f} {y['mean_dose_gy']:>10.4f} {rel:>9.2e}")
print(f"status cuda {a.get('status')}, cpu {b.get('status')}; worst relative difference {worst:.2e}")
# Float sums in another order move a few boundary voxels at most.
sys.exit(0 if worst <= 0.01 and a.get("status") == b.get("status") else 1)
PY
    RUN_RC=$?
fi
echo "run comparison exit $RUN_RC"

echo "== table"
python3 - "$RES" cuda_full cuda_small cpu_small_axial <<'PY' | tee "$RES/table.txt"
import json, os, sys
res, runs = sys.argv[1], sys.argv[2:]
data = {}
for r in runs:
    p = os.path.join(res, r + ".json")
    if os.path.exists(p):
        with open(p) as f:
            data[r] = json.load(f)
names = []
for r in data.values():
    for s in r["stages"]:
        if s["name"] not in names:
            names.append(s["name"])
w = max([len(n) for n in names] + [24])
print(f"{'stage (s)':<{w}} " + " ".join(f"{r:>16}" for r in runs))
def rc(r):
    p = os.path.join(res, r + ".rc")
    code = open(p).read().strip() if os.path.exists(p) else "?"
    return "timeout" if code == "124" else f"exit {code}"
def cell(r, f):
    return f"{f(data[r]):>16}" if r in data else f"{rc(r):>16}"
for n in names:
    def sec(d, n=n):
        v = [s["seconds"] for s in d["stages"] if s["name"] == n]
        return f"{v[0]:.3f}" if v else "-"
    print(f"{n:<{w}} " + " ".join(cell(r, sec) for r in runs))
print(f"{'study total':<{w}} " + " ".join(cell(r, lambda d: f"{d['study_total_s']:.3f}") for r in runs))
print(f"{'peak memory MB':<{w}} " + " ".join(cell(r, lambda d: f"{d['peak_memory_mb']:.0f}" if d.get('peak_memory_mb') else "-") for r in runs))
print(f"{'GPU estimate MB':<{w}} " + " ".join(cell(r, lambda d: f"{d['memory_estimate_mb']:.0f}" if d.get('memory_estimate_mb') else "-") for r in runs))
for r, d in data.items():
    print(f"{r}: {d['device_name']}; {d['patient']}")
PY
echo "parity tests exit $PARITY_RC; run cuda-vs-cpu exit $RUN_RC; results in $RES"
rm -rf "$WORK"
[ $PARITY_RC = 0 ] && exit $RUN_RC
exit $PARITY_RC
