#!/usr/bin/env bash
# Creates the Python virtualenv used by the e2e tests (idempotent, quick when already done):
#   confluent-kafka (librdkafka, an independent Kafka client), paho-mqtt v2, and protobuf +
#   grpcio-tools (its bundled protoc compiles gateway/proto/sparkplug_b.proto for the Sparkplug
#   interop tests: an implementation independent of the gateway's prost code).
# Env: IRONBRIDGE_VENV (default /var/cache/ironbridge/venv), PYTHON (default python3).
set -euo pipefail

VENV="${IRONBRIDGE_VENV:-/var/cache/ironbridge/venv}"
PYTHON="${PYTHON:-python3}"
CONFLUENT_KAFKA_VERSION="2.16.1"
PAHO_VERSION="2.2.0"
GRPCIO_TOOLS_VERSION="1.76.0"
PROTOBUF_VERSION="6.33.6"

check() {
    "$VENV/bin/python" - <<PY 2>/dev/null
import confluent_kafka, paho.mqtt, google.protobuf, grpc_tools
from importlib.metadata import version
assert confluent_kafka.__version__ == "$CONFLUENT_KAFKA_VERSION", confluent_kafka.__version__
assert paho.mqtt.__version__ == "$PAHO_VERSION", paho.mqtt.__version__
assert version("grpcio-tools") == "$GRPCIO_TOOLS_VERSION", version("grpcio-tools")
assert google.protobuf.__version__ == "$PROTOBUF_VERSION", google.protobuf.__version__
PY
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "python venv ready at $VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "confluent-kafka==$CONFLUENT_KAFKA_VERSION" "paho-mqtt==$PAHO_VERSION" \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION" "protobuf==$PROTOBUF_VERSION"
check
echo "python venv ready at $VENV"
