#!/usr/bin/env bash
# The proof campaign (issue 8), one command:
#   bash tests/campaign/run.sh          # full: 100 kill -9 trials, 20 outages of 5-120 s (~1 h)
#   bash tests/campaign/run.sh short    # what CI runs as part of the test suite
# Writes JSON reports to $IRONBRIDGE_CAMPAIGN_OUT and renders docs/campaign/REPORT.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-full}"
export IRONBRIDGE_CAMPAIGN="$mode"
export IRONBRIDGE_CAMPAIGN_OUT="${IRONBRIDGE_CAMPAIGN_OUT:-$PWD/target/campaign-$mode}"
export IRONBRIDGE_REQUIRE_KAFKA=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironbridge-target}"
bash tests/scripts/install-deps.sh
rm -rf "$IRONBRIDGE_CAMPAIGN_OUT"
# The campaign's tests share the machine's 2 cores with the daemon: one at a time.
cargo nextest run -p ironbridge-e2e --locked --cargo-profile test-opt --profile campaign --test campaign \
    --test-threads 1 --no-fail-fast || status=$?
python3 tests/campaign/report.py "$IRONBRIDGE_CAMPAIGN_OUT" docs/campaign/REPORT.md
exit "${status:-0}"
