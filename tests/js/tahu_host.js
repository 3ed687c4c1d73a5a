// An independent Sparkplug B host for the e2e tests: Eclipse Tahu's JavaScript codec
// (npm `sparkplug-payload`, the lineage of Ignition's MQTT Engine) and MQTT.js. Nothing here
// shares code with the gateway. Installed by tests/scripts/install-deps.sh (npm ci of this
// directory's package-lock.json into /var/cache/ironbridge/js; NODE_PATH points there).
//
// Usage: node tahu_host.js --port PORT [--subscribe FILTER ...] [--client-id ID]
//
// Prints one JSON object per line on stdout:
//   {"event": "ready"}                      connected, subscribed (QoS 1) to every filter
//   {"kind": "sparkplug", "topic", "type", "group", "node", "device", "qos", "retain", "dup",
//    "seq", "bd_seq", "timestamp", "uuid", "metrics": [{"name", "alias", "datatype",
//    "datatype_from", "value_field", "value", "is_null", "timestamp", "is_historical",
//    "is_transient", "properties": {"key": {"type", "value"}}}]}
//   {"kind": "state", "topic", "qos", "retain", "state": {...} | "text"}
//   {"kind": "other", "topic", "qos", "retain"}
//   {"kind": "undecodable", "topic", "error"}
//   {"event": "ack", "id"} / {"event": "error", "id", "error"}
//
// `datatype_from` is "message" when the metric carried its datatype, "birth" when it came by
// alias only (Sparkplug 3.0 data messages need not repeat it) and the host re-decoded it with
// Tahu using the datatype of the last NBIRTH/DBIRTH, as a real host does, and null when neither.
// Numbers beyond 2^53 are printed as decimal strings.
//
// Commands, one JSON object per line on stdin, published at QoS 0 (tck-id-topics-ncmd-mqtt,
// tck-id-topics-dcmd-mqtt) and encoded with Tahu:
//   {"id", "cmd": "ncmd_rebirth", "group", "node"}
//   {"id", "cmd": "dcmd", "group", "node", "device", "metrics": [{"name"|"alias", "datatype",
//    "value"}]}
//   {"id", "cmd": "publish", "topic", "payload": {"timestamp", "seq", "metrics": [{"name",
//    "alias", "type", "value", "timestamp"}]}}   any Sparkplug message (as a third-party node)
//   {"id", "cmd": "raw", "topic", "text", "qos"?, "retain"?}   UTF-8 text as is (e.g. a STATE)
// "ack" means the client handed the packet to the socket (QoS 0 has no acknowledgement; for a
// raw publish at QoS 1, the PUBACK).
"use strict";

const mqtt = require("mqtt");
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const proto = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf;

function arg(name, dflt) {
  const out = [];
  for (let i = 2; i < process.argv.length - 1; i++) {
    if (process.argv[i] === name) out.push(process.argv[i + 1]);
  }
  return out.length ? out : dflt;
}

const port = Number(arg("--port", [])[0]);
const filters = arg("--subscribe", ["spBv1.0/#"]);
const clientId = arg("--client-id", ["tahu-test-host"])[0];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Tahu returns protobufjs Longs for 64-bit fields, Uint8Arrays for bytes.
function plain(v) {
  if (v === undefined || v === null) return null;
  if (Long.isLong(v)) {
    return v.greaterThan(Number.MAX_SAFE_INTEGER) || v.lessThan(Number.MIN_SAFE_INTEGER)
      ? v.toString()
      : v.toNumber();
  }
  if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

// Datatype codes by alias and by name per node/device, from the last births.
const births = new Map();

function key(group, node, device) {
  return device === null ? `${group}/${node}` : `${group}/${node}/${device}`;
}

function decodeSparkplug(topic, payload, packet) {
  const parts = topic.split("/");
  const [, group, type, node] = parts;
  const device = parts.length > 4 ? parts[4] : null;
  const k = key(group, node, device);
  const raw = proto.Payload.decode(payload);
  const isBirth = type === "NBIRTH" || type === "DBIRTH";
  if (isBirth) {
    const defs = new Map();
    for (const m of raw.metrics) {
      if (!m.hasOwnProperty("datatype")) continue;
      if (m.hasOwnProperty("alias")) defs.set(`a${plain(m.alias)}`, m.datatype);
      if (m.hasOwnProperty("name")) defs.set(`n${m.name}`, m.datatype);
    }
    births.set(k, defs);
    if (type === "NBIRTH") {
      for (const other of [...births.keys()]) {
        if (other.startsWith(`${k}/`)) births.delete(other);
      }
    }
  }
  // Alias-only metrics: give them the birth's datatype (device first, then node) and let Tahu
  // decode the patched payload.
  // Which protobuf value field each metric used (e.g. intValue for a UInt32, as Sparkplug 3.0
  // says, where Tahu's JavaScript decoder reads longValue).
  const fields = raw.metrics.map((m) => m.value || null);
  const from = [];
  const defs = [births.get(k), births.get(key(group, node, null))].filter(Boolean);
  let patched = false;
  for (const m of raw.metrics) {
    if (m.hasOwnProperty("datatype")) {
      from.push("message");
      continue;
    }
    const lookup = (d) =>
      (m.hasOwnProperty("alias") && d.get(`a${plain(m.alias)}`)) ||
      (m.hasOwnProperty("name") && d.get(`n${m.name}`)) ||
      undefined;
    const dt = defs.map(lookup).find((x) => x !== undefined);
    if (dt === undefined) {
      from.push(null);
    } else {
      m.datatype = dt;
      patched = true;
      from.push("birth");
    }
  }
  const decoded = sparkplug.decodePayload(
    patched ? proto.Payload.encode(raw).finish() : payload,
  );
  const metrics = (decoded.metrics || []).map((m, i) => ({
    name: m.name === undefined ? null : m.name,
    alias: plain(m.alias),
    datatype: from[i] === null ? null : m.type,
    datatype_from: from[i],
    value_field: fields[i],
    value: plain(m.value),
    is_null: m.value === null,
    timestamp: plain(m.timestamp),
    is_historical: m.isHistorical === true,
    is_transient: m.isTransient === true,
    properties: plain(m.properties) || {},
  }));
  const bd = metrics.find((m) => m.name === "bdSeq");
  return {
    kind: "sparkplug",
    topic,
    type,
    group,
    node,
    device,
    qos: packet.qos,
    retain: packet.retain,
    dup: packet.dup,
    seq: decoded.hasOwnProperty("seq") ? plain(decoded.seq) : null,
    bd_seq: bd ? bd.value : null,
    timestamp: decoded.hasOwnProperty("timestamp") ? plain(decoded.timestamp) : null,
    uuid: decoded.uuid === undefined ? null : decoded.uuid,
    metrics,
  };
}

function decode(topic, payload, packet) {
  const parts = topic.split("/");
  if (parts[0] === "spBv1.0" && parts[1] === "STATE") {
    let state;
    try {
      state = JSON.parse(payload.toString("utf8"));
    } catch (_) {
      state = payload.toString("utf8");
    }
    return { kind: "state", topic, qos: packet.qos, retain: packet.retain, state };
  }
  if (parts[0] !== "spBv1.0" || parts.length < 4) {
    return { kind: "other", topic, qos: packet.qos, retain: packet.retain };
  }
  return decodeSparkplug(topic, payload, packet);
}

function command(c) {
  const timestamp = Date.now();
  if (c.cmd === "ncmd_rebirth") {
    return [
      `spBv1.0/${c.group}/NCMD/${c.node}`,
      { timestamp, metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: true, timestamp }] },
    ];
  }
  if (c.cmd === "dcmd") {
    const metrics = c.metrics.map((m) => {
      const out = { type: m.datatype, value: m.value, timestamp };
      if (m.name !== undefined) out.name = m.name;
      if (m.alias !== undefined) out.alias = m.alias;
      return out;
    });
    return [`spBv1.0/${c.group}/DCMD/${c.node}/${c.device}`, { timestamp, metrics }];
  }
  if (c.cmd === "publish") {
    // The host as a third-party edge node (ingest tests): any Sparkplug message, Tahu-encoded.
    return [c.topic, c.payload];
  }
  throw new Error(`unknown command ${JSON.stringify(c.cmd)}`);
}

// [topic, payload bytes, publish options] of a command line.
function publication(c) {
  if (c.cmd === "raw") {
    return [c.topic, Buffer.from(c.text, "utf8"), { qos: c.qos || 0, retain: c.retain === true }];
  }
  const [topic, body] = command(c);
  return [topic, Buffer.from(sparkplug.encodePayload(body)), { qos: 0, retain: false }];
}

const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
  clientId,
  protocolVersion: 4,
  clean: true,
  keepalive: 30,
  reconnectPeriod: 0,
});
client.on("connect", () => {
  client.subscribe(
    Object.fromEntries(filters.map((f) => [f, { qos: 1 }])),
    (err) => emit(err ? { event: "error", id: null, error: `subscribe: ${err}` } : { event: "ready" }),
  );
});
client.on("error", (err) => emit({ event: "error", id: null, error: String(err) }));
client.on("close", () => emit({ event: "closed" }));
client.on("message", (topic, payload, packet) => {
  try {
    emit(decode(topic, payload, packet));
  } catch (e) {
    emit({ kind: "undecodable", topic, error: String(e) });
  }
});

let input = "";
process.stdin.on("data", (chunk) => {
  input += chunk;
  let nl;
  while ((nl = input.indexOf("\n")) >= 0) {
    const line = input.slice(0, nl).trim();
    input = input.slice(nl + 1);
    if (!line) continue;
    let id = null;
    try {
      const c = JSON.parse(line);
      id = c.id === undefined ? null : c.id;
      const [topic, payload, opts] = publication(c);
      client.publish(topic, payload, opts, (err) =>
        emit(err ? { event: "error", id, error: String(err) } : { event: "ack", id }),
      );
    } catch (e) {
      emit({ event: "error", id, error: String(e) });
    }
  }
});
process.stdin.on("end", () => client.end());
