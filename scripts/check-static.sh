#!/usr/bin/env bash
# Builds the static x86_64 binary for the box and checks it (issue 40):
# statically linked (file, ldd), runs, and gives the same dose summary as the
# normal build on a small phantom with truth masks (doses equal to 1e-6
# relative). Usage: scripts/check-static.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
target=x86_64-unknown-linux-gnu
tdir=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target"
static=$tdir/$target/release/organdose
# The normal build to compare with (ORGANDOSE_DYNAMIC: one already built).
dynamic=${ORGANDOSE_DYNAMIC:-}
if [ -z "$dynamic" ]; then
    cargo build --release
    dynamic=$tdir/release/organdose
fi
file "$static" | grep -q "static" || { echo "FAIL: $static is not statically linked"; file "$static"; exit 1; }
if ldd "$static" 2>&1 | grep -q "=>"; then
    echo "FAIL: ldd lists shared libraries for $static"; ldd "$static"; exit 1
fi
"$static" --version
"$dynamic" phantom --out "$work/ph" --seed 5 --small >/dev/null
pdir=$(find "$work/ph" -mindepth 1 -maxdepth 1 -type d | head -1)
"$static" dose "$pdir" --truth -o "$work/static" --no-dicom >/dev/null 2>&1
"$dynamic" dose "$pdir" --truth -o "$work/dynamic" --no-dicom >/dev/null 2>&1
python3 - "$work/static/dose_summary.json" "$work/dynamic/dose_summary.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
worst = 0.0
for name, o in b["organs"].items():
    x, y = a["organs"][name]["mean_dose_gy"], o["mean_dose_gy"]
    rel = abs(x - y) / max(abs(y), 1e-12)
    worst = max(worst, rel)
    print(f"{name:13s} static {x:.6f} Gy  dynamic {y:.6f} Gy  rel {rel:.1e}")
assert a["status"] == b["status"], (a["status"], b["status"])
assert worst <= 1e-6, f"doses differ by {worst:.1e} relative"
print("static binary: same summary as the dynamic build (worst", f"{worst:.1e})")
PY
ls -l "$static"
