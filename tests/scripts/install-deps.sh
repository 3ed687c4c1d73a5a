#!/usr/bin/env bash
# Installs everything the e2e tests (crate ironbridge-e2e) need on a fresh Debian machine. Run as root.
# Idempotent and quick (seconds) when everything is already installed; the first run builds tansu
# (~9 min on an idle 2-core machine, over 30 min next to other builds).
#   apt: mosquitto, mosquitto-clients, socat, python3-venv
#   apt: chromium, chromium-driver (the web UI's browser tests: /usr/bin/chromium, /usr/bin/chromedriver)
#   /var/cache/ironbridge/venv: confluent-kafka, paho-mqtt     (setup-python.sh)
#   /var/cache/ironbridge/tansu/bin/tansu                      (install-tansu.sh)
#   /var/cache/ironbridge/js/node_modules: sparkplug-payload (Eclipse Tahu), mqtt   (npm ci of tests/js)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

APT_PACKAGES=(mosquitto mosquitto-clients socat python3-venv)
# Browser tests of the web UI (tests/tests/web_browser.rs); Debian's builds, never a downloaded browser.
APT_PACKAGES+=(chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

"$HERE/setup-python.sh"

# The independent Sparkplug host in JavaScript (tests/js/tahu_host.js): Eclipse Tahu's codec and
# MQTT.js at the versions pinned in tests/js/package-lock.json, installed outside the source tree.
# Needs node and npm (Debian `nodejs`, `npm`, or NodeSource): skipped with a note when absent.
JS_DIR="${IRONBRIDGE_JS:-/var/cache/ironbridge/js}"
if command -v npm >/dev/null 2>&1; then
    if ! cmp -s "$HERE/../js/package-lock.json" "$JS_DIR/package-lock.json" \
        || [ ! -f "$JS_DIR/node_modules/sparkplug-payload/package.json" ]; then
        echo "npm ci in $JS_DIR"
        mkdir -p "$JS_DIR"
        cp "$HERE/../js/package.json" "$HERE/../js/package-lock.json" "$JS_DIR/"
        (cd "$JS_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    else
        echo "node modules ready at $JS_DIR"
    fi
else
    echo "npm not found: the Tahu host tests (sparkplug_tahu) need node and npm" >&2
fi
"$HERE/install-tansu.sh"
"$HERE/../../adapters/scripts/install-test-deps.sh"
