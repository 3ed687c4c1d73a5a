#!/usr/bin/env bash
# Runs Ironbridge's whole test suite. Installs what the tests need first (Debian, as root):
# apt packages, a Python virtualenv with an independent Kafka client, the tansu Kafka-protocol
# broker, and cargo-nextest. Extra arguments go to `cargo nextest run` (e.g. a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironbridge-target}"

bash tests/scripts/install-deps.sh
# Installed just above: tests needing Kafka must not skip themselves.
export IRONBRIDGE_REQUIRE_KAFKA=1
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --locked --cargo-profile test-opt --profile "$profile" "$@"
cargo test --workspace --locked --doc --quiet
