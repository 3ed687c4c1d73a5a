#!/usr/bin/env bash
# Installs the Kafka-protocol broker `tansu` (pinned version) under /var/cache/ironbridge/tansu.
# Idempotent: does nothing if the binary there already reports the pinned version.
# Building takes ~9 minutes on an idle 2-core machine (33 min were seen with other builds running).
# Builds in its own target dir so it never locks the workspace's shared target dir.
#
# Env: TANSU_ROOT (default /var/cache/ironbridge/tansu), TANSU_BUILD_DIR (default /var/tmp/tansu-build).
set -euo pipefail

TANSU_VERSION="0.6.0"
TANSU_ROOT="${TANSU_ROOT:-/var/cache/ironbridge/tansu}"
TANSU_BUILD_DIR="${TANSU_BUILD_DIR:-/var/tmp/tansu-build}"
BIN="$TANSU_ROOT/bin/tansu"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "tansu $TANSU_VERSION already installed at $BIN"
    exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-tansu: cargo not found on PATH" >&2
    exit 1
fi

mkdir -p "$TANSU_ROOT" "$TANSU_BUILD_DIR"
echo "building tansu $TANSU_VERSION into $TANSU_ROOT (this takes several minutes)..."
CARGO_TARGET_DIR="$TANSU_BUILD_DIR" cargo install "tansu@$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$TANSU_ROOT"

"$BIN" --version
