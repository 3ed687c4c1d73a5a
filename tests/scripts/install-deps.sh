#!/usr/bin/env bash
# Installs everything the e2e tests (crate ironbridge-e2e) need on a fresh Debian machine. Run as root.
# Idempotent and quick (seconds) when everything is already installed; the first run builds tansu
# (~9 min on an idle 2-core machine, over 30 min next to other builds).
#   apt: mosquitto, mosquitto-clients, socat, python3-venv
#   apt: chromium, chromium-driver (the web UI's browser tests: /usr/bin/chromium, /usr/bin/chromedriver)
#   /var/cache/ironbridge/venv: confluent-kafka, paho-mqtt     (setup-python.sh)
#   /var/cache/ironbridge/tansu/bin/tansu                      (install-tansu.sh)
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
"$HERE/install-tansu.sh"
"$HERE/../../adapters/scripts/install-test-deps.sh"
