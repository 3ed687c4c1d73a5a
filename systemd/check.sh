#!/usr/bin/env bash
# Checks ironbridge.service: `systemd-analyze verify` must print nothing (it exits 0 on unknown
# keys, so any output fails; on systemd < 254 the two restart back-off keys are allowed), and
# `systemd-analyze security --offline` must rate the exposure at 2.0 or below. Usage: systemd/check.sh [path of the ironbridge binary ExecStart should use]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-/bin/true}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify checks that ExecStart's binary exists: point it at a real one.
sed "s|/usr/bin/ironbridge|$bin|g" "$here/ironbridge.service" > "$tmp/ironbridge.service"
out=$(systemd-analyze verify "$tmp/ironbridge.service" 2>&1 || true)
# systemd before 254 does not know the restart back-off keys (the unit's comment says what older
# systemd does without them); only these two lines are forgiven, and only there.
sd_version=$(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
if [ "${sd_version:-0}" -lt 254 ]; then
    out=$(printf '%s\n' "$out" | grep -Ev "Unknown key '(RestartSteps|RestartMaxDelaySec)' in section \[Service\]" || true)
fi
if [ -n "$out" ]; then
    echo "systemd-analyze verify:"; echo "$out"; exit 1
fi
exposure=$(systemd-analyze security --offline=true "$tmp/ironbridge.service" 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if ! awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'; then
    echo "exposure '${exposure}' is above 2.0"; exit 1
fi
echo "ironbridge.service: verify clean, exposure ${exposure} (limit 2.0)"
