#!/usr/bin/env bash
# CUDA compile check without a GPU (issue 8), two parts:
# 1. `nvcc --ptx` over every kernels/*.cu at the compute capabilities organdose
#    targets. nvcc comes from PyPI, pinned to CUDA 13.0 as in
#    shared/CUDA-BUILD.md (a newer nvvm/crt emits PTX the 13.0 driver refuses).
#    CUDA 13 dropped Pascal (compute_61, the paper's GTX 1070): nvcc 13 reports
#    it as unsupported, which is shown and does not fail the check.
# 2. NVRTC, the path organdose really uses at start-up (ci/nvrtc-check.py, the
#    same options as crates/kernels/src/device.rs): NVRTC 13.0 for 75/87/90 and NVRTC 12.9
#    (second venv) for compute_61, so the GTX 1070 target is checked too.
#
#   ci/cuda-check.sh            # venvs .cuda-venv / .cuda12-venv ($CUDA_VENV, $CUDA12_VENV)
#   ARCHS="87 90" ci/cuda-check.sh
#
# Exit status 0 when every kernel compiles wherever the compiler supports the arch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CUDA_VENV:-.cuda-venv}
ARCHS=${ARCHS:-"61 87 90"}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
CU=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
export PATH="$CU/bin:$PATH"
NVCC="$CU/bin/nvcc"
"$NVCC" --version | tail -2
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail=0
printf '%-22s %-6s %s\n' kernel arch result
for cu in kernels/*.cu; do
    name=$(basename "$cu" .cu)
    for a in $ARCHS; do
        log="$OUT/$name.$a.log"
        # -Werror all-warnings: a warning in a kernel is a bug to look at.
        if "$NVCC" --ptx -arch="compute_$a" -Werror all-warnings -I"$CU/include" \
            -o "$OUT/$name.$a.ptx" "$cu" >"$log" 2>&1; then
            entries=$(grep -c '^\.visible \.entry' "$OUT/$name.$a.ptx" || true)
            printf '%-22s %-6s ok (%s entry points, %s)\n' "$name" "$a" "$entries" \
                "$(grep -m1 '^\.version' "$OUT/$name.$a.ptx")"
        elif grep -qi "unsupported gpu architecture" "$log"; then
            printf '%-22s %-6s unsupported by this nvcc: %s\n' "$name" "$a" "$(head -1 "$log")"
        else
            printf '%-22s %-6s FAILED\n' "$name" "$a"
            sed 's/^/    /' "$log"
            fail=1
        fi
    done
done

echo "NVRTC (the run-time path, options of crates/kernels/src/device.rs)"
LD_LIBRARY_PATH="$CU/lib" python3 ci/nvrtc-check.py "$(ls "$CU"/lib/libnvrtc.so.13* | sort | head -1)" 75 87 90 || fail=1
VENV12=${CUDA12_VENV:-.cuda12-venv}
[ -x "$VENV12/bin/python" ] || python3 -m venv "$VENV12"
"$VENV12/bin/pip" install --quiet --disable-pip-version-check nvidia-cuda-nvrtc-cu12==12.9.86
NV12=$("$VENV12/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cuda_nvrtc", "lib"))')
LD_LIBRARY_PATH="$NV12" python3 ci/nvrtc-check.py "$(ls "$NV12"/libnvrtc.so.12* | sort | head -1)" 61 || fail=1
exit $fail
