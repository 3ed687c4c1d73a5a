#!/bin/bash
# Runs the daemon under heaptrack while keeping its PID (exec), so a bench can sample its RSS
# and stop it with SIGTERM as usual. Use as the bench's daemon binary:
#
#   CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     CARGO_TARGET_DIR=/var/tmp/ib-heap-target cargo build --release -p ironbridge
#   IRONBRIDGE_HEAPTRACK_BIN=/var/tmp/ib-heap-target/release/ironbridge \
#     cargo bench -p ironbridge-e2e --bench gateway -- --only soak --soak-minutes 6 \
#     --bin tests/benches/heaptrack-daemon.sh --no-build --out /var/tmp/soak-heap
#   heaptrack_print -f /var/tmp/heaptrack/ironbridge.<time>.zst   # or heaptrack_gui
#
# Output: $IRONBRIDGE_HEAPTRACK_DIR (default /var/tmp/heaptrack)/ironbridge.<unix time>.zst
set -euo pipefail
bin=${IRONBRIDGE_HEAPTRACK_BIN:?set IRONBRIDGE_HEAPTRACK_BIN to a daemon built with symbols}
dir=${IRONBRIDGE_HEAPTRACK_DIR:-/var/tmp/heaptrack}
lib=/usr/lib/heaptrack
mkdir -p "$dir"
out=$dir/ironbridge.$(date +%s)
pipe=$dir/fifo.$$
rm -f "$pipe"
mkfifo "$pipe"
# The interpreter reads the trace until the daemon exits, in its own session so that it
# outlives this script's exec.
setsid bash -c "'$lib/libexec/heaptrack_interpret' < '$pipe' | zstd -q -c > '$out.zst'; rm -f '$pipe'" \
  </dev/null >/dev/null 2>&1 &
exec env LD_PRELOAD="$lib/libheaptrack_preload.so" DUMP_HEAPTRACK_OUTPUT="$pipe" "$bin" "$@"
