#!/usr/bin/env bash
# The real anatomy for the phantom generator (WORD, ICRP-110, KiTS23, AMOS label
# maps; about 60 MB) from its public homes into DIR, laid out as
# crates/phantom/src/realdata.rs reads it, every file checked against its sha256 in
# scripts/anatomy-manifest.txt. Then: ORGANDOSE_ANATOMY_DATA=DIR (or
# --anatomy-data DIR) for `organdose demo`, `phantom`, `eval` and the tests.
#
#   scripts/fetch-anatomy.sh DIR
#
# ORGANDOSE_ANATOMY_BASE_URL=URL fetches every file from URL/PATH instead: a mirror
# laid out like a data folder (file:///srv/organdose-data, https://intranet/...);
# a data folder filled by this script is such a mirror. Files already in DIR with
# the right sha256 are kept, so a broken run can be run again. Nothing is
# installed anywhere else. Exit status: 0 when every file is there and checked.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/anatomy-manifest.txt"
if [ $# -ne 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    echo "usage: $0 DIR   (ORGANDOSE_ANATOMY_BASE_URL=URL: fetch from a mirror)" >&2
    exit 2
fi
dest="$1"
base="${ORGANDOSE_ANATOMY_BASE_URL:-}"
base="${base%/}"

if ! command -v curl >/dev/null; then
    echo "fetch-anatomy: curl is needed (apt-get install curl)" >&2
    exit 2
fi
if command -v sha256sum >/dev/null; then
    sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null; then
    sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
    echo "fetch-anatomy: sha256sum or shasum is needed" >&2
    exit 2
fi

mkdir -p "$dest"
failed=0
fetched=0
kept=0
# Groups in manifest order, each once.
groups=$(grep -v '^[[:space:]]*#' "$manifest" | awk 'NF >= 4 && !seen[$1]++ { print $1 }')
for g in $groups; do
    done_g=""
    bad=""
    while read -r _ want path url; do
        out="$dest/$path"
        if [ -f "$out" ] && [ "$(sha256 "$out")" = "$want" ]; then
            done_g=kept
            break
        fi
        if [ -n "$base" ]; then
            src="$base/$path"
        elif [ "$url" = "-" ]; then
            continue
        else
            src="$url"
        fi
        mkdir -p "$(dirname "$out")"
        # Unavailable here (404, no such file in the mirror, network): the group's
        # next alternative. Present but with another sha256: a damaged or replaced
        # file, refused, never kept.
        if ! curl -fsSL --retry 2 -o "$out.part" "$src" 2>/dev/null; then
            rm -f "$out.part"
            continue
        fi
        got="$(sha256 "$out.part")"
        if [ "$got" != "$want" ]; then
            rm -f "$out.part"
            bad="$src: sha256 $got, expected $want (manifest scripts/anatomy-manifest.txt)"
            break
        fi
        mv -f "$out.part" "$out"
        done_g=fetched
        break
    done < <(grep -v '^[[:space:]]*#' "$manifest" | awk -v g="$g" '$1 == g')
    if [ -n "$bad" ]; then
        echo "FAIL $g: $bad" >&2
        failed=$((failed + 1))
    elif [ -z "$done_g" ]; then
        echo "FAIL $g: not available from ${base:-its public home} (see scripts/anatomy-manifest.txt)" >&2
        failed=$((failed + 1))
    elif [ "$done_g" = fetched ]; then
        fetched=$((fetched + 1))
    else
        kept=$((kept + 1))
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "fetch-anatomy: $failed of the files failed; $fetched fetched, $kept already there" >&2
    exit 1
fi
echo "fetch-anatomy: $fetched fetched, $kept already there, all checked (sha256) in $dest"
echo "use it with: export ORGANDOSE_ANATOMY_DATA=$dest   (or --anatomy-data $dest)"
