#!/usr/bin/env bash
# Checks ironbridge.service: `systemd-analyze verify` must print nothing (it exits 0 on unknown
# keys, so any output fails), and `systemd-analyze security --offline` must rate the exposure
# at 2.0 or below. Usage: systemd/check.sh [path of the ironbridge binary ExecStart should use]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-/bin/true}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify checks that ExecStart's binary exists: point it at a real one.
sed "s|/usr/bin/ironbridge|$bin|g" "$here/ironbridge.service" > "$tmp/ironbridge.service"
out=$(systemd-analyze verify "$tmp/ironbridge.service" 2>&1 || true)
if [ -n "$out" ]; then
    echo "systemd-analyze verify:"; echo "$out"; exit 1
fi
exposure=$(systemd-analyze security --offline=true "$tmp/ironbridge.service" 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if ! awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'; then
    echo "exposure '${exposure}' is above 2.0"; exit 1
fi
echo "ironbridge.service: verify clean, exposure ${exposure} (limit 2.0)"
