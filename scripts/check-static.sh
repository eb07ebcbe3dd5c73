#!/usr/bin/env bash
# Builds a static binary for the box and checks it (issue 40): statically
# linked (file, ldd), runs `--version` and `inspect`, and gives the same dose
# summary as the normal build on a small phantom with truth masks (doses equal
# to 1e-6 relative).
#
#   scripts/check-static.sh [x86_64|aarch64] [WORKDIR]
#
# aarch64 (a Jetson) is cross-built with Debian's gcc-aarch64-linux-gnu and
# run under qemu-user (qemu-user-static). CARGO_TARGET_DIR is honoured;
# ORGANDOSE_DYNAMIC=PATH reuses an already built normal binary;
# ORGANDOSE_STATIC_PROFILE=static-check builds with the quicker profile CI
# uses (Cargo.toml), default release.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
work=${2:-$(mktemp -d)}
target=$arch-unknown-linux-gnu
tdir=${CARGO_TARGET_DIR:-target}
run=()
case "$arch" in
    x86_64) ;;
    aarch64)
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
        run=(qemu-aarch64-static)
        ;;
    *) echo "usage: $0 [x86_64|aarch64] [WORKDIR]" >&2; exit 2 ;;
esac
profile=${ORGANDOSE_STATIC_PROFILE:-release}
t0=$(date +%s)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile "$profile" --target "$target"
echo "static $arch build ($profile profile): $(( $(date +%s) - t0 )) s"
static=$tdir/$target/$profile/organdose
dynamic=${ORGANDOSE_DYNAMIC:-}
if [ -z "$dynamic" ]; then
    cargo build --release
    dynamic=$tdir/release/organdose
fi
file "$static" | grep -q "static" || { echo "FAIL: $static is not statically linked"; file "$static"; exit 1; }
file "$static" | grep -qi "${arch/_/-}" || { echo "FAIL: $static is not $arch"; file "$static"; exit 1; }
if [ "$arch" = x86_64 ] && ldd "$static" 2>&1 | grep -q "=>"; then
    echo "FAIL: ldd lists shared libraries for $static"; ldd "$static"; exit 1
fi
"${run[@]}" "$static" --version
"$dynamic" phantom --out "$work/ph" --seed 5 --small >/dev/null 2>&1
pdir=$(find "$work/ph" -mindepth 1 -maxdepth 1 -type d | head -1)
"${run[@]}" "$static" inspect "$pdir" | head -3
"${run[@]}" "$static" dose "$pdir" --truth -o "$work/static" --no-dicom >/dev/null 2>&1
"$dynamic" dose "$pdir" --truth -o "$work/dynamic" --no-dicom >/dev/null 2>&1
python3 - "$work/static/dose_summary.json" "$work/dynamic/dose_summary.json" "$arch" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
worst = 0.0
for name, o in b["organs"].items():
    x, y = a["organs"][name]["mean_dose_gy"], o["mean_dose_gy"]
    rel = abs(x - y) / max(abs(y), 1e-12)
    worst = max(worst, rel)
    print(f"{name:13s} static {sys.argv[3]} {x:.6f} Gy  normal build {y:.6f} Gy  rel {rel:.1e}")
assert a["status"] == b["status"], (a["status"], b["status"])
assert worst <= 1e-6, f"doses differ by {worst:.1e} relative"
print(f"static {sys.argv[3]} binary: same summary as the normal build (worst {worst:.1e})")
PY
ls -l "$static"
