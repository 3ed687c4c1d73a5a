#!/usr/bin/env bash
# The proof campaign (issue 8), one command:
#   bash tests/campaign/run.sh          # full: 100 kill -9 trials, 20 outages of 5-120 s, disk full
#                                       # (both policies, max_bytes and ENOSPC), 20 torn-write trials
#   bash tests/campaign/run.sh short    # what CI runs as part of the test suite
# Needs root (the disk-full campaign mounts small tmpfs file systems).
# IRONBRIDGE_BIN=/path/to/ironbridge tests that binary instead of building one;
# IRONBRIDGE_CAMPAIGN_SEED=N replays the random choices; IRONBRIDGE_CAMPAIGN_TESTS=kill_9 runs only
# the tests whose names match (a nextest filter).
# Writes JSON reports to $IRONBRIDGE_CAMPAIGN_OUT; the full campaign renders docs/campaign/REPORT.md
# and keeps its JSON next to it, the short one renders $IRONBRIDGE_CAMPAIGN_OUT/REPORT.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-full}"
export IRONBRIDGE_CAMPAIGN="$mode"
export IRONBRIDGE_CAMPAIGN_OUT="${IRONBRIDGE_CAMPAIGN_OUT:-$PWD/target/campaign-$mode}"
export IRONBRIDGE_REQUIRE_KAFKA=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironbridge-target}"
if [ -n "${IRONBRIDGE_BIN:-}" ]; then
    echo "campaign: testing $IRONBRIDGE_BIN ($("$IRONBRIDGE_BIN" --version 2>/dev/null || echo '?'))"
fi
bash tests/scripts/install-deps.sh
rm -rf "$IRONBRIDGE_CAMPAIGN_OUT"
# The campaign's tests share the machine's 2 cores with the daemon: one at a time.
cargo nextest run -p ironbridge-e2e --locked --cargo-profile test-opt --profile campaign --test campaign \
    --test-threads 1 --no-fail-fast ${IRONBRIDGE_CAMPAIGN_TESTS:-} || status=$?
if [ "$mode" = full ]; then
    mkdir -p docs/campaign
    # A filtered run replaces only the reports it wrote; the others stay in the report.
    if [ -z "${IRONBRIDGE_CAMPAIGN_TESTS:-}" ]; then
        rm -f docs/campaign/*.json
    fi
    cp "$IRONBRIDGE_CAMPAIGN_OUT"/*.json docs/campaign/ 2>/dev/null || true
    python3 tests/campaign/report.py docs/campaign docs/campaign/REPORT.md "${IRONBRIDGE_CAMPAIGN_NOTE:-}"
else
    python3 tests/campaign/report.py "$IRONBRIDGE_CAMPAIGN_OUT" "$IRONBRIDGE_CAMPAIGN_OUT/REPORT.md" \
        "${IRONBRIDGE_CAMPAIGN_NOTE:-}"
fi
exit "${status:-0}"
