#!/usr/bin/env bash
# Builds, on a machine WITHOUT a GPU, what scripts/gpu_check.sh runs on one:
# target/gpu-dist.tar.xz holding `organdose` (--features cuda) and the
# `gpu_parity` test binary (--features cuda). Recipe: shared/CUDA-BUILD.md
# (CUDA 13.0 from PyPI, a stub libcuda for the linker, LIBRARY_PATH not
# RUSTFLAGS so candle-kernels is not rebuilt needlessly).
#
#   scripts/build_gpu_dist.sh          # CUDA_COMPUTE_CAP=90 (H100/H200); 87 Jetson Orin
#
# candle-kernels' nvcc step takes 10-15 minutes on 2 cores; the archive is
# small enough (< 64 MiB) to be carried to the device machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CUDA_VENV:-.cuda-venv}
CAP=${CUDA_COMPUTE_CAP:-90}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
CU=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')

# Link folder: unversioned names for the wheels' libraries, and a stub
# libcuda.so (soname libcuda.so.1) defining the driver API names cudarc
# declares; the real one comes with the driver at run time.
LINK=$PWD/target/cuda-link
mkdir -p "$LINK"
for l in nvrtc cublas cublasLt curand cudart; do
    f=$(ls "$CU"/lib/lib$l.so.* | sort | head -1)
    ln -sf "$f" "$LINK/lib$l.so"
done
SYS=$(cargo metadata --format-version 1 --features cuda-kernels | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
p = [p["manifest_path"] for p in m["packages"] if p["name"] == "cudarc"][0]
print(os.path.join(os.path.dirname(p), "src/driver/sys/mod.rs"))')
grep -o 'fn cu[A-Za-z0-9_]*(' "$SYS" | sed 's/^fn \(.*\)($/\1/' | sort -u \
    | awk '{print "void " $1 "(void) {}"}' >"$LINK/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/cuda_stub.c"

export PATH="$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_COMPUTE_CAP="$CAP" \
    LIBRARY_PATH="$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --release --features cuda
PARITY=$(cargo test --release --features cuda --test it --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "it":
        print(m["executable"])')
DIST=target/gpu-dist
rm -rf "$DIST" && mkdir -p "$DIST"
cp "${CARGO_TARGET_DIR:-target}/release/organdose" "$DIST/organdose"
# The integration-test binary; gpu_check.sh runs its gpu_parity:: tests.
cp "$PARITY" "$DIST/gpu_parity"
strip "$DIST/organdose" "$DIST/gpu_parity" || true
tar -cJf target/gpu-dist.tar.xz -C "$DIST" .
ls -l "$DIST" target/gpu-dist.tar.xz
