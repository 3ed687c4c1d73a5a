#!/usr/bin/env python3
"""MQTT publisher (paho-mqtt v2) for the Ironbridge e2e tests; speaks MQTT 3.1.1 or 5.

    /var/cache/ironbridge/venv/bin/python tests/py/mqtt_pub.py --port P --topic T [options]

Publishes --count messages (payload --message, or when it contains "{i}" with the index substituted;
--payload-hex gives raw bytes instead) and waits until every one is acknowledged (PUBACK/PUBCOMP for
QoS 1/2; for QoS 0 until written to the socket). MQTT 5 only: --user-property NAME=VALUE (repeatable),
--content-type. Prints {"published": N, "elapsed_s": S} and exits 0; on any failure prints the reason to
stderr and exits non-zero (2 connect refused/failed, 3 publish failed or timed out).
"""

import argparse
import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--message", default="msg-{i}")
    p.add_argument("--payload-hex")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--qos", type=int, default=1, choices=[0, 1, 2])
    p.add_argument("--retain", action="store_true")
    p.add_argument("--protocol", default="5", choices=["311", "5"])
    p.add_argument("--client-id", default="")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--user-property", action="append", default=[])
    p.add_argument("--content-type")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()

    v5 = args.protocol == "5"
    if not v5 and (args.user_property or args.content_type):
        print("--user-property/--content-type need --protocol 5", file=sys.stderr)
        return 2
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    if args.username is not None:
        client.username_pw_set(args.username, args.password)

    props = None
    if v5 and (args.user_property or args.content_type):
        props = Properties(PacketTypes.PUBLISH)
        if args.content_type:
            props.ContentType = args.content_type
        pairs = []
        for up in args.user_property:
            name, sep, value = up.partition("=")
            if not sep:
                print(f"--user-property must be NAME=VALUE, got {up!r}", file=sys.stderr)
                return 2
            pairs.append((name, value))
        if pairs:
            props.UserProperty = pairs

    deadline = time.monotonic() + args.timeout
    try:
        rc = client.connect(args.host, args.port, keepalive=30)
    except OSError as e:
        print(f"connect {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    if rc != mqtt.MQTT_ERR_SUCCESS:
        print(f"connect {args.host}:{args.port}: {mqtt.error_string(rc)}", file=sys.stderr)
        return 2
    client.loop_start()
    try:
        # Wait for CONNACK (is_connected turns true only on a successful CONNACK).
        while not client.is_connected():
            if time.monotonic() > deadline:
                print("no successful CONNACK before the timeout", file=sys.stderr)
                return 2
            time.sleep(0.01)
        start = time.monotonic()
        infos = []
        for i in range(args.count):
            if args.payload_hex is not None:
                payload = bytes.fromhex(args.payload_hex)
            else:
                payload = args.message.replace("{i}", str(i)).encode("utf-8")
            info = client.publish(args.topic, payload, qos=args.qos, retain=args.retain, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                print(f"publish {i}: {mqtt.error_string(info.rc)}", file=sys.stderr)
                return 3
            infos.append(info)
        for i, info in enumerate(infos):
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                print(f"publish {i}: not acknowledged before the timeout", file=sys.stderr)
                return 3
        elapsed = time.monotonic() - start
        print(json.dumps({"published": args.count, "elapsed_s": round(elapsed, 6)}), flush=True)
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
