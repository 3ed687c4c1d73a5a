#!/usr/bin/env python3
"""QoS 1 load that records what the broker acknowledged, for the booted-image test.

    /var/cache/ironbridge/venv/bin/python tests/image/acked_pub.py --port P --prefix PFX --acked FILE
        [--rate N] [--duration S] [--count N]

Publishes payloads "<PFX>-<seq>" (seq from 0) with QoS 1 to topic "image-test/<PFX>", at most 64
unacknowledged, paced to --rate per second, until --count were acknowledged, --duration seconds
passed, or the connection is lost (the power cut). Each PUBACK appends its payload as one line to
--acked and flushes it at once, so the file holds exactly the messages the broker took
responsibility for, whenever this process ends. Prints {"acked": N, "sent": N, "lost_connection":
bool} at the end; exits 0 unless it could not connect (2).
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--acked", required=True)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--duration", type=float, default=3600.0)
    p.add_argument("--count", type=int, default=0)
    args = p.parse_args()

    acked_file = open(args.acked, "a", buffering=1)
    window = threading.Semaphore(64)
    # Guards the two maps only; never held while calling into paho (its network thread runs
    # on_publish while holding paho's own locks: holding ours across publish() deadlocks).
    lock = threading.Lock()
    inflight = {}  # mid -> payload, sent and not yet acknowledged
    early = {}  # mid -> reason code, acknowledged before publish() returned its mid
    state = {"acked": 0, "lost": False, "connected": threading.Event()}

    def record(payload, reason_code):
        if reason_code.is_failure:
            print(f"refused {payload}: {reason_code}", file=sys.stderr)
        else:
            acked_file.write(payload + "\n")
            acked_file.flush()
            state["acked"] += 1
        window.release()

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            state["connected"].set()

    def on_publish(client, userdata, mid, reason_code, properties):
        with lock:
            payload = inflight.pop(mid, None)
            if payload is None:
                early[mid] = reason_code
                return
        record(payload, reason_code)

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if state.get("closing"):
            return
        state["lost"] = True
        # Unblock the sender: nothing more will be acknowledged.
        for _ in range(64):
            window.release()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"image-test-{args.prefix}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(64)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    try:
        client.connect(args.host, args.port, keepalive=10)
    except OSError as e:
        print(f"connect failed: {e}", file=sys.stderr)
        return 2
    client.loop_start()
    if not state["connected"].wait(15):
        print("no CONNACK within 15 s", file=sys.stderr)
        return 2
    topic = f"image-test/{args.prefix}"
    start = time.monotonic()
    seq = 0
    while not state["lost"] and time.monotonic() - start < args.duration:
        if args.count and seq >= args.count:
            break
        window.acquire()
        if state["lost"]:
            break
        payload = f"{args.prefix}-{seq}"
        info = client.publish(topic, payload, qos=1)
        with lock:
            reason_code = early.pop(info.mid, None)
            if reason_code is None:
                inflight[info.mid] = payload
        if reason_code is not None:
            record(payload, reason_code)
        seq += 1
        ahead = seq / args.rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    # Wait (bounded) for the acknowledgements still in flight.
    deadline = time.monotonic() + 30
    while not state["lost"] and time.monotonic() < deadline:
        with lock:
            if not inflight:
                break
        time.sleep(0.05)
    state["closing"] = True
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"acked": state["acked"], "sent": seq, "lost_connection": state["lost"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
