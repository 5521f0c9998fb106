#!/usr/bin/env bash
# Stamps an INF from inf/ctxguard.inx the way the WDK's stampinf does for one architecture:
# `$ARCH$` in section names and values becomes the architecture, DriverVer becomes today's
# date (or SOURCE_DATE_EPOCH's) and the crate version as four parts; lines end in CRLF.
#
#   scripts/stampinf.sh <input.inx> <output.inf> <amd64|arm64> <crate version, e.g. 0.1.0>
#
# The packaging (scripts/package.sh) and the INF lint (tests/inf_lint.rs) both run this file,
# so what the lint checks is what ships.
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 <input.inx> <output.inf> <amd64|arm64> <version>" >&2
    exit 2
fi
input=$1 output=$2 arch=$3 version=$4

case $arch in
    amd64 | arm64) ;;
    *) echo "stampinf.sh: unsupported architecture '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac

# DriverVer's version is w.x.y.z with each part at most 65535; SemVer pre-release and build
# suffixes have no place there, so they are dropped (0.2.0-rc.1 stamps as 0.2.0.0).
core=${version%%[-+]*}
IFS=. read -r major minor patch extra <<<"$core"
if [[ -n ${extra:-} || ! $major =~ ^[0-9]+$ || ! $minor =~ ^[0-9]+$ || ! $patch =~ ^[0-9]+$ ]]; then
    echo "stampinf.sh: '$version' is not a major.minor.patch version" >&2
    exit 2
fi
for part in "$major" "$minor" "$patch"; do
    if ((10#$part > 65535)); then
        echo "stampinf.sh: version part $part exceeds 65535, which DriverVer cannot hold" >&2
        exit 2
    fi
done
driver_version="$((10#$major)).$((10#$minor)).$((10#$patch)).0"

if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
    driver_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%m/%d/%Y)
else
    driver_date=$(date -u +%m/%d/%Y)
fi

driver_ver_lines=$(grep -c -E '^[[:space:]]*DriverVer[[:space:]]*=' "$input" || true)
if [[ $driver_ver_lines -ne 1 ]]; then
    echo "stampinf.sh: $input must contain exactly one DriverVer line, found $driver_ver_lines" >&2
    exit 1
fi
if LC_ALL=C grep -q -P '[^\x00-\x7F]' "$input"; then
    echo "stampinf.sh: $input contains non-ASCII bytes; the INF is kept ASCII so it is valid ANSI" >&2
    exit 1
fi

tmp=$(mktemp "${output}.XXXXXX")
trap 'rm -f "$tmp"' EXIT
sed -e 's/\r$//' \
    -e "s/\\\$ARCH\\\$/${arch}/g" \
    -e "s|^\\([[:space:]]*DriverVer[[:space:]]*=\\).*|\\1 ${driver_date},${driver_version}|" \
    -e 's/$/\r/' \
    "$input" >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$output"
trap - EXIT
