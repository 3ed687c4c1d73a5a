"""An independent Sparkplug B host application for the interop tests: paho-mqtt for MQTT and
Google's protobuf runtime (sparkplug_pb.py, generated from the gateway's .proto by protoc) for
payloads. Nothing here shares code with the gateway.

Usage: sparkplug_host.py --port PORT [--subscribe FILTER ...] [--client-id ID]
                          [--username U --password P]

Prints one JSON object per line on stdout:
  {"event": "ready"}                         once connected and subscribed
  {"topic", "kind": "sparkplug", "type", "group", "node", "device", "seq", "timestamp", "uuid",
   "metrics": [{"name", "alias", "datatype", "value", "is_null", "timestamp", "is_historical",
                "properties"}],
   "qos", "retain"}                          every message also has the delivery's qos and retain
  {"topic", "kind": "state", "state": {...}}  a STATE message (JSON or 2.2 text)
  {"topic", "kind": "other", "payload": text}
  {"event": "ack", "id": ID}                 a stdin command was published (written for QoS 0,
                                             PUBACK for QoS 1)
  {"event": "error", "id": ID, "error": text}

Reads commands as JSON lines on stdin:
  {"id", "cmd": "ncmd_rebirth", "group", "node"}
  {"id", "cmd": "ncmd", "group", "node", "uuid"?, "metrics": [...]}   (metrics as for dcmd)
  {"id", "cmd": "dcmd", "group", "node", "device", "uuid"?, "metrics": [{"name"|"alias",
   "datatype": "UInt16", "value": ...}]}     (datatype may be null: left out of the metric)
  {"id", "cmd": "state", "host_id", "online": bool, "timestamp"?}   retained, QoS 1
  {"id", "cmd": "raw", "topic", "hex"}
"""
import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

from sparkplug_pb import DATATYPE_NAMES, DATATYPES, Payload

OUT = threading.Lock()


def emit(obj) -> None:
    with OUT:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def value_of(m, datatype: int):
    """A metric/property value by its datatype (Sparkplug 3.0 encodings)."""
    name = DATATYPE_NAMES[datatype] if 0 <= datatype < len(DATATYPE_NAMES) else "Unknown"
    field = m.WhichOneof("value")
    if field is None:
        return None
    raw = getattr(m, field)
    if name in ("Int8", "Int16", "Int32"):
        return signed(int(raw), {"Int8": 8, "Int16": 16, "Int32": 32}[name])
    if name == "Int64":
        return signed(int(raw), 64)
    if name in ("UInt8", "UInt16", "UInt32", "UInt64", "DateTime"):
        return int(raw)
    if name in ("Float", "Double"):
        return float(raw)
    if name == "Boolean":
        return bool(raw)
    if name in ("String", "Text", "UUID"):
        return str(raw)
    if field == "bytes_value":
        return raw.hex()
    return str(raw)


def properties_of(m) -> dict:
    if not m.HasField("properties"):
        return {}
    out = {}
    for k, v in zip(m.properties.keys, m.properties.values):
        out[k] = None if v.is_null else value_of(v, v.type)
    return out


# Datatypes by alias and by name, per (group, node, device), learnt from births: data messages
# may carry metrics by alias without a datatype.
BIRTHS: dict = {}


def decode(topic: str, data: bytes) -> dict:
    parts = topic.split("/")
    if len(parts) >= 3 and parts[1] == "STATE":
        try:
            state = json.loads(data)
        except ValueError:
            state = data.decode(errors="replace")
        return {"topic": topic, "kind": "state", "state": state}
    if parts[0] != "spBv1.0" or len(parts) < 4:
        return {"topic": topic, "kind": "other", "payload": data.decode(errors="replace")}
    p = Payload()
    p.ParseFromString(data)
    kind = parts[2]
    key = (parts[1], parts[3], parts[4] if len(parts) > 4 else None)
    if kind in ("NBIRTH", "DBIRTH"):
        BIRTHS[key] = {}
        if kind == "NBIRTH":
            for k in [k for k in BIRTHS if k[:2] == key[:2] and k[2] is not None]:
                del BIRTHS[k]
    known = BIRTHS.setdefault(key, {})
    metrics = []
    for m in p.metrics:
        if m.HasField("datatype"):
            dt = m.datatype
        elif m.HasField("alias") and ("a", m.alias) in known:
            dt = known[("a", m.alias)]
        else:
            dt = known.get(("n", m.name), 0)
        if kind in ("NBIRTH", "DBIRTH"):
            if m.HasField("alias"):
                known[("a", m.alias)] = dt
            known[("n", m.name)] = dt
        metrics.append({
            "name": m.name if m.HasField("name") else None,
            "alias": m.alias if m.HasField("alias") else None,
            "datatype": DATATYPE_NAMES[dt] if dt < len(DATATYPE_NAMES) else dt,
            "is_null": m.is_null,
            "value": None if m.is_null else value_of(m, dt),
            "timestamp": m.timestamp if m.HasField("timestamp") else None,
            "is_historical": bool(m.is_historical),
            "properties": properties_of(m),
        })
    return {
        "topic": topic,
        "kind": "sparkplug",
        "group": parts[1],
        "type": parts[2],
        "node": parts[3],
        "device": parts[4] if len(parts) > 4 else None,
        "seq": p.seq if p.HasField("seq") else None,
        "timestamp": p.timestamp if p.HasField("timestamp") else None,
        "uuid": p.uuid if p.HasField("uuid") else None,
        "metrics": metrics,
    }


def set_value(m, datatype: str, value) -> None:
    if value is None:
        m.is_null = True
        return
    if datatype in ("Int8", "Int16", "Int32"):
        m.int_value = int(value) & 0xFFFFFFFF
    elif datatype in ("UInt8", "UInt16", "UInt32"):
        m.int_value = int(value)
    elif datatype == "Int64":
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype in ("UInt64", "DateTime"):
        m.long_value = int(value)
    elif datatype == "Float":
        m.float_value = float(value)
    elif datatype == "Double":
        m.double_value = float(value)
    elif datatype == "Boolean":
        m.boolean_value = bool(value)
    elif datatype in ("String", "Text", "UUID"):
        m.string_value = str(value)
    else:
        raise ValueError(f"datatype {datatype} not supported by the test host")


def command_payload(metrics, uuid=None) -> bytes:
    p = Payload()
    p.timestamp = int(time.time() * 1000)
    if uuid is not None:
        p.uuid = uuid
    for spec in metrics:
        m = p.metrics.add()
        if spec.get("name") is not None:
            m.name = spec["name"]
        if spec.get("alias") is not None:
            m.alias = int(spec["alias"])
        m.timestamp = p.timestamp
        dt = spec.get("datatype")
        kind = spec.get("value_as") or dt
        if dt is not None:
            m.datatype = DATATYPES[dt]
        set_value(m, kind, spec.get("value"))
    return p.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--client-id", default="sparkplug-test-host")
    ap.add_argument("--subscribe", action="append", default=None)
    ap.add_argument("--username")
    ap.add_argument("--password")
    args = ap.parse_args()
    filters = args.subscribe or ["spBv1.0/#"]

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv311,
    )
    ready = threading.Event()

    def on_connect(c, userdata, flags, rc, props=None):
        if rc != 0:
            emit({"event": "error", "id": None, "error": f"connect: {rc}"})
            return
        c.subscribe([(f, 1) for f in filters])

    def on_subscribe(c, userdata, mid, rcs, props=None):
        if not ready.is_set():
            ready.set()
            emit({"event": "ready"})

    def on_message(c, userdata, msg):
        try:
            rec = decode(msg.topic, msg.payload)
        except Exception as e:  # a malformed payload is reported, not fatal
            rec = {"topic": msg.topic, "kind": "undecodable", "error": str(e)}
        # As delivered to a QoS 1 subscription: the QoS is the publisher's (MQTT-3.8.4-6).
        rec["qos"] = msg.qos
        rec["retain"] = bool(msg.retain)
        emit(rec)

    if args.username is not None:
        client.username_pw_set(args.username, args.password)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cid = None
        try:
            c = json.loads(line)
            cid = c.get("id")
            cmd = c["cmd"]
            if cmd == "ncmd_rebirth":
                topic = f"spBv1.0/{c['group']}/NCMD/{c['node']}"
                payload = command_payload(
                    [{"name": "Node Control/Rebirth", "datatype": "Boolean", "value": True}],
                    c.get("uuid"),
                )
                # NCMD and DCMD are QoS 0, not retained (tck-id-topics-ncmd-mqtt,
                # tck-id-topics-dcmd-mqtt).
                info = client.publish(topic, payload, qos=0)
            elif cmd == "ncmd":
                topic = f"spBv1.0/{c['group']}/NCMD/{c['node']}"
                info = client.publish(topic, command_payload(c["metrics"], c.get("uuid")), qos=0)
            elif cmd == "dcmd":
                topic = f"spBv1.0/{c['group']}/DCMD/{c['node']}/{c['device']}"
                info = client.publish(topic, command_payload(c["metrics"], c.get("uuid")), qos=0)
            elif cmd == "state":
                body = {"online": bool(c["online"]),
                        "timestamp": int(c.get("timestamp") or time.time() * 1000)}
                info = client.publish(f"spBv1.0/STATE/{c['host_id']}", json.dumps(body),
                                      qos=1, retain=True)
            elif cmd == "raw":
                info = client.publish(c["topic"], bytes.fromhex(c["hex"]), qos=1)
            else:
                raise ValueError(f"unknown command {cmd!r}")
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise RuntimeError("not acknowledged within 10 s")
            emit({"event": "ack", "id": cid})
        except Exception as e:
            emit({"event": "error", "id": cid, "error": str(e)})
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
