#!/usr/bin/env bash
# The whole performance table in one run (issue 8): every benchmark next to its baseline, on this
# machine, now — then the table is written into BENCHMARKS.md between the perf-table markers.
#
#   bash tests/benches/perf-table.sh            # full (~25 min on 2 cores + builds)
#   bash tests/benches/perf-table.sh --quick    # smaller sizes (~8 min)
#
# Runs: edge-buffer append/read vs raw write/read (+ RSS, recovery scan), Modbus TCP polling vs
# the pymodbus client, and the gateway bench (ingest vs mosquitto, drain vs rskafka and
# confluent-kafka, end-to-end latency vs a raw producer, RSS, recovery after kill -9, binary
# size). Raw outputs are kept in $PERF_OUT (default target/perf-table/).
set -euo pipefail
cd "$(dirname "$0")/../.."
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironbridge-target}"
out="${PERF_OUT:-$PWD/target/perf-table}"
dir="${PERF_DIR:-/var/tmp}"
mkdir -p "$out"

bash tests/scripts/install-deps.sh >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }

started=$(date -u +%FT%TZ)
echo "== edge-buffer bench"
cargo bench -p edge-buffer --locked --bench throughput -- $quick --dir "$dir" | tee "$out/edge-buffer.txt"
echo "== Modbus TCP bench"
cargo test -p ironbridge-adapters --locked --profile test-opt --test bench_tcp -- --ignored --nocapture \
    | tee "$out/modbus.txt"
echo "== gateway bench"
cargo bench -p ironbridge-e2e --locked --bench gateway -- $quick --dir "$dir" | tee "$out/gateway.txt"

python3 tests/benches/perf_table.py --out "$out" --started "$started" --mode "${quick:+quick}" \
    --benchmarks BENCHMARKS.md
echo "BENCHMARKS.md updated (section between the perf-table markers)"
