#!/usr/bin/env bash
# One tarball per target for installing the box (issue 40): the static binary,
# the shipped weights, the default configuration, the systemd unit and a
# manifest with each file's sha256.
#
#   scripts/package.sh [x86_64|aarch64] [OUTDIR]
#
# Builds with scripts/check-static.sh first (which also checks the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
out=${2:-dist}
target=$arch-unknown-linux-gnu
tdir=${CARGO_TARGET_DIR:-target}
scripts/check-static.sh "$arch" "$(mktemp -d)"
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
name=organdose-$version-$target
stage=$(mktemp -d)/$name
mkdir -p "$stage/bin" "$stage/weights" "$stage/config" "$stage/deploy"
cp "$tdir/$target/release/organdose" "$stage/bin/"
cp -r weights/organs "$stage/weights/"
cp config/default.toml "$stage/config/"
cp deploy/organdose.service "$stage/deploy/"
cp README.md "$stage/"
(cd "$stage" && find . -type f ! -name MANIFEST.sha256 -print0 | sort -z | xargs -0 sha256sum > MANIFEST.sha256)
mkdir -p "$out"
tar -C "$(dirname "$stage")" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
