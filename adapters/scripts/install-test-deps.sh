#!/usr/bin/env bash
# Installs what the adapters' Modbus tests need with real peers (idempotent; seconds when done):
#   apt: socat (pseudo-terminal pairs for Modbus RTU), python3-venv
#   /var/cache/ironbridge/modbus-venv: pymodbus (an independent Modbus TCP/RTU implementation)
#                                      and pyserial (its RTU transport)
# Env: IRONBRIDGE_MODBUS_VENV (default /var/cache/ironbridge/modbus-venv), PYTHON (default python3).
# Run as root (apt). Called by tests/scripts/install-deps.sh.
set -euo pipefail

VENV="${IRONBRIDGE_MODBUS_VENV:-/var/cache/ironbridge/modbus-venv}"
PYTHON="${PYTHON:-python3}"
PYMODBUS_VERSION="3.16.1"
PYSERIAL_VERSION="3.5"

APT_PACKAGES=(socat python3-venv)
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

check() {
    "$VENV/bin/python" - <<PY 2>/dev/null
import pymodbus, serial
assert pymodbus.__version__ == "$PYMODBUS_VERSION", pymodbus.__version__
assert serial.__version__ == "$PYSERIAL_VERSION", serial.__version__
PY
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "modbus venv ready at $VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "pymodbus==$PYMODBUS_VERSION" "pyserial==$PYSERIAL_VERSION"
check
echo "modbus venv ready at $VENV"
