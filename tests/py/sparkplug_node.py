#!/usr/bin/env python3
"""A third-party Sparkplug B edge node for the Ironbridge ingest tests, written with Google's
protobuf runtime (sparkplug_pb.py, generated from the same .proto) and paho-mqtt, independent of
the gateway's prost code.

    /var/cache/ironbridge/venv/bin/python tests/py/sparkplug_node.py --port P [--group G] [--node N]

Scenario (each step printed as one JSON line {"event": ...} on stdout):
  1. subscribes to spBv1.0/G/NCMD/N, publishes NBIRTH (bdSeq, Node Control/Rebirth) seq 0 and
     DBIRTH dev1 seq 1 with one metric of many datatypes (aliases 10..),
  2. DDATA dev1 seq 2 by alias only (no names, no datatypes): temp 21.5, count -7 (int_value
     sign-extended), small -1 (Int8, width-only 0xFF convention), big 2^64-1, flags, ints,
  3. DDATA seq 4 — seq 3 is skipped on purpose — and waits for the NCMD Node Control/Rebirth,
  4. on it: NBIRTH seq 0 and DBIRTH seq 1 with *new* aliases (temp is 20 now), DDATA seq 2
     temp 22.5 by the new alias,
  5. from a second node "badnode": a malformed payload, an oversize NDATA (--oversize metrics),
     and a message in the wrong namespace (spAv1.0),
  6. prints {"event": "done"} and exits 0. Exit 2: no rebirth request within --timeout.
"""

import argparse
import json
import os
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paho.mqtt.client as mqtt  # noqa: E402
from sparkplug_pb import Payload  # noqa: E402

# Sparkplug datatype codes.
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME = 9, 10, 11, 12, 13
INT32ARRAY, BOOLEANARRAY, STRINGARRAY = 24, 32, 33


def emit(**kw):
    print(json.dumps(kw), flush=True)


def now_ms():
    return int(time.time() * 1000)


def bool_array(values):
    bits = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            bits[i // 8] |= 0x80 >> (i % 8)
    return struct.pack("<I", len(values)) + bytes(bits)


def set_value(m, dt, v):
    m.datatype = dt
    if dt in (INT8, INT16, INT32):
        m.int_value = v & 0xFFFFFFFF  # sign-extended to 32 bits
    elif dt in (UINT8, UINT16, UINT32):
        m.int_value = v
    elif dt in (INT64,):
        m.long_value = v & 0xFFFFFFFFFFFFFFFF
    elif dt in (UINT64, DATETIME):
        m.long_value = v
    elif dt == FLOAT:
        m.float_value = v
    elif dt == DOUBLE:
        m.double_value = v
    elif dt == BOOLEAN:
        m.boolean_value = v
    elif dt == STRING:
        m.string_value = v
    elif dt == INT32ARRAY:
        m.bytes_value = struct.pack("<%di" % len(v), *v)
    elif dt == BOOLEANARRAY:
        m.bytes_value = bool_array(v)
    elif dt == STRINGARRAY:
        m.bytes_value = b"".join(s.encode() + b"\0" for s in v)
    else:
        raise ValueError(dt)


# name, datatype, birth value, first alias
DEVICE_METRICS = [
    ("temp", FLOAT, 20.0),
    ("count", INT16, 0),
    ("small", INT8, 0),
    ("big", UINT64, 0),
    ("ratio", DOUBLE, 0.5),
    ("running", BOOLEAN, False),
    ("recipe", STRING, "A"),
    ("since", DATETIME, 1_700_000_000_000),
    ("ints", INT32ARRAY, [1, -2]),
    ("flags", BOOLEANARRAY, [True, False, True]),
    ("names", STRINGARRAY, ["x", "y"]),
]


class Node:
    def __init__(self, args):
        self.args = args
        self.seq = 0
        self.rebirth = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"py-sparkplug-{args.node}",
            protocol=mqtt.MQTTv311,
        )
        self.subscribed = threading.Event()
        self.client.on_message = self.on_message
        self.client.on_subscribe = lambda *a, **k: self.subscribed.set()

    def topic(self, kind, device=None, ns="spBv1.0", node=None):
        t = f"{ns}/{self.args.group}/{kind}/{node or self.args.node}"
        return f"{t}/{device}" if device else t

    def on_message(self, _client, _userdata, msg):
        p = Payload()
        try:
            p.ParseFromString(msg.payload)
        except Exception as e:  # noqa: BLE001
            emit(event="bad_command", topic=msg.topic, error=str(e))
            return
        metrics = [{"name": m.name, "boolean_value": m.boolean_value} for m in p.metrics]
        emit(event="ncmd", topic=msg.topic, metrics=metrics)
        if any(m.name == "Node Control/Rebirth" and m.boolean_value for m in p.metrics):
            self.rebirth.set()

    def publish(self, topic, payload, qos=1):
        data = payload if isinstance(payload, bytes) else payload.SerializeToString()
        info = self.client.publish(topic, data, qos=qos)
        info.wait_for_publish(timeout=self.args.timeout)
        if not info.is_published():
            raise RuntimeError(f"publish to {topic} not acknowledged")

    def payload(self, seq=True):
        p = Payload()
        p.timestamp = now_ms()
        if seq:
            p.seq = self.seq
            self.seq = (self.seq + 1) % 256
        return p

    def births(self, alias_base):
        self.seq = 0
        p = self.payload()
        m = p.metrics.add()
        m.name = "bdSeq"
        set_value(m, INT64, 0)
        m = p.metrics.add()
        m.name = "Node Control/Rebirth"
        set_value(m, BOOLEAN, False)
        self.publish(self.topic("NBIRTH"), p)
        p = self.payload()
        for i, (name, dt, v) in enumerate(DEVICE_METRICS):
            m = p.metrics.add()
            m.name = name
            m.alias = alias_base + i
            m.timestamp = now_ms()
            set_value(m, dt, v)
            if name == "temp":
                pm = m.properties
                pm.keys.append("engUnit")
                pv = pm.values.add()
                pv.type = STRING
                pv.string_value = "degC"
        self.publish(self.topic("DBIRTH", "dev1"), p)
        emit(event="births", alias_base=alias_base)

    def data(self, values, alias_base, seq_override=None):
        p = self.payload()
        if seq_override is not None:
            p.seq = seq_override
            self.seq = (seq_override + 1) % 256
        names = [n for n, _, _ in DEVICE_METRICS]
        for name, raw in values:
            i = names.index(name)
            m = p.metrics.add()
            m.alias = alias_base + i
            m.timestamp = now_ms()
            raw(m)
            # Data by alias only: datatype and name left out (as the spec recommends).
            m.ClearField("datatype")
        self.publish(self.topic("DDATA", "dev1"), p)
        emit(event="ddata", seq=p.seq)

    def run(self):
        a = self.args
        self.client.connect(a.host, a.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(self.topic("NCMD"), qos=1)
        if not self.subscribed.wait(a.timeout):
            emit(event="error", error="no SUBACK")
            return 3
        self.births(10)

        def small_width_only(m):
            m.int_value = 0xFF  # Int8 -1, width-only convention

        self.data(
            [
                ("temp", lambda m: setattr(m, "float_value", 21.5)),
                ("count", lambda m: setattr(m, "int_value", (-7) & 0xFFFFFFFF)),
                ("small", small_width_only),
                ("big", lambda m: setattr(m, "long_value", 2**64 - 1)),
                ("flags", lambda m: setattr(m, "bytes_value", bool_array([False, True]))),
                ("ints", lambda m: setattr(m, "bytes_value", struct.pack("<2i", -3, 4))),
                ("names", lambda m: setattr(m, "bytes_value", b"ab\0\0c\0")),
            ],
            10,
        )
        # Skip seq 3.
        self.data([("temp", lambda m: setattr(m, "float_value", 21.75))], 10, seq_override=4)
        if not self.rebirth.wait(a.timeout):
            emit(event="error", error="no rebirth request")
            return 2
        emit(event="rebirth_requested")
        self.births(20)
        self.data([("temp", lambda m: setattr(m, "float_value", 22.5))], 20)

        # Bad input from another node.
        self.publish(self.topic("NDATA", node="badnode"), b"\xff\xff\xff\x01")
        big = Payload()
        big.timestamp = now_ms()
        big.seq = 0
        for i in range(a.oversize):
            m = big.metrics.add()
            m.name = f"m{i}"
            set_value(m, INT32, i)
        self.publish(self.topic("NDATA", node="badnode"), big)
        self.publish(self.topic("NDATA", ns="spAv1.0", node="badnode"), b"sparkplug A")
        emit(event="bad_input_sent")
        self.client.loop_stop()
        self.client.disconnect()
        emit(event="done")
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--group", default="plant")
    p.add_argument("--node", default="thirdparty")
    p.add_argument("--oversize", type=int, default=100)
    p.add_argument("--timeout", type=float, default=20.0)
    return Node(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
