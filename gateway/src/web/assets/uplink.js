// Uplink: Kafka brokers, TLS/SASL, compression, ordered routes, connection test.
import {
  el, api, clear, banner, field, textInput, numInput, select, checkbox, sectionForm, pageHead, isAdmin, lines,
} from "/assets/app.js";

export async function render(main) {
  main.appendChild(pageHead("Uplink", "Where buffered data goes: Kafka brokers, security and topic routing."));
  await sectionForm(main, "kafka", "Kafka", build);
}

function build(cfg) {
  const tls = cfg.tls || {};
  const sasl = cfg.sasl || null;
  const i = {
    servers: el("textarea", { value: (cfg.bootstrap_servers || []).join("\n"), id: "kafka-servers", attrs: { rows: 3, placeholder: "kafka-1.plant.example:9093" } }),
    clientId: textInput(cfg.client_id),
    gatewayId: textInput(cfg.gateway_id, { placeholder: "(host name)" }),
    compression: select([["none", "none"], ["lz4", "lz4"], ["zstd", "zstd"], ["gzip", "gzip"], ["snappy", "snappy"]], cfg.compression),
    unmatched: select([["forward", "Forward to the default topic"], ["drop", "Drop (counted)"]], cfg.unmatched),
    defaultTopic: textInput(cfg.default_topic),
    retainedTopic: textInput(cfg.retained_topic || "", { placeholder: "(off)" }),
    tlsOn: checkbox(tls.enabled),
    ca: textInput(tls.ca_file || "", { placeholder: "(system trust store)" }),
    cert: textInput(tls.cert_file || "", { placeholder: "(no client certificate)" }),
    key: textInput(tls.key_file || ""),
    sni: textInput(tls.server_name || "", { placeholder: "(broker host)" }),
    saslMech: select([["", "None"], ["plain", "PLAIN"], ["scram-sha-256", "SCRAM-SHA-256"], ["scram-sha-512", "SCRAM-SHA-512"]], sasl ? sasl.mechanism : ""),
    saslUser: textInput(sasl ? sasl.username : "", { autocomplete: "off" }),
    saslPass: textInput(sasl ? sasl.password : "", { type: "password", autocomplete: "new-password" }),
  };
  const advancedKeys = ["batch_max_records", "batch_max_bytes", "linger_ms", "max_request_bytes", "max_record_bytes", "request_timeout_ms",
    "retry_backoff_initial_ms", "retry_backoff_max_ms", "metadata_refresh_ms", "unknown_topic_retry_ms", "commit_interval_ms", "shutdown_grace_ms"];
  const adv = {};
  const advFields = el("div", { class: "fields" });
  for (const k of advancedKeys) {
    if (!(k in cfg)) continue;
    adv[k] = numInput(cfg[k], { min: 0, step: 1 });
    advFields.appendChild(field(k.replace(/_/g, " ").replace(/\bms\b/, "(ms)"), adv[k], { name: "kafka." + k }));
  }
  const tlsBox = el("div", { class: "fields" },
    field("CA certificate (PEM file)", i.ca, { name: "kafka.tls.ca_file" }),
    field("Client certificate (PEM file)", i.cert, { name: "kafka.tls.cert_file" }),
    field("Client key (PEM file)", i.key, { name: "kafka.tls.key_file" }),
    field("Verify server name", i.sni, { name: "kafka.tls.server_name" }));
  const saslBox = el("div", { class: "fields" },
    field("SASL username", i.saslUser, { name: "kafka.sasl.username" }),
    field("SASL password", i.saslPass, { name: "kafka.sasl.password", help: "“********” keeps the stored password." }));
  const sync = () => { tlsBox.classList.toggle("hidden", !i.tlsOn.checked); saslBox.classList.toggle("hidden", !i.saslMech.value); };
  i.tlsOn.addEventListener("change", sync);
  i.saslMech.addEventListener("change", sync);
  sync();

  // Routes: an ordered list; the first matching filter wins.
  const routes = [];
  const list = el("div", { class: "route-list", id: "routes" });
  const empty = el("p", { class: "muted", text: "No routes: every message goes to the default topic (or is dropped)." });
  const redraw = () => {
    clear(list, routes.map((r, n) => { r.number(n, routes.length); return r.node; }));
    empty.classList.toggle("hidden", routes.length > 0);
  };
  const move = (r, d) => { const n = routes.indexOf(r); const m = n + d; if (m < 0 || m >= routes.length) return; routes.splice(n, 1); routes.splice(m, 0, r); redraw(); };
  const del = (r) => { routes.splice(routes.indexOf(r), 1); redraw(); };
  const add = (rc) => { const r = routeRow(rc, move, del); routes.push(r); redraw(); return r; };
  for (const rc of cfg.routes || []) add(rc);
  const addBtn = isAdmin() ? el("button", { type: "button", text: "Add route", id: "add-route", on: { click: () => add({ filter: "", topic: "", key: "{topic}", value: "raw" }).focus() } }) : null;

  const result = el("div", { class: "result", id: "test-result", attrs: { "aria-live": "polite" } });
  const collect = () => {
    const out = { ...cfg };
    out.bootstrap_servers = lines(i.servers.value);
    out.client_id = i.clientId.value.trim();
    out.gateway_id = i.gatewayId.value.trim();
    out.compression = i.compression.value;
    out.unmatched = i.unmatched.value;
    out.default_topic = i.defaultTopic.value.trim();
    out.retained_topic = i.retainedTopic.value.trim() || null;
    out.tls = { ...tls, enabled: i.tlsOn.checked, ca_file: i.ca.value.trim() || null, cert_file: i.cert.value.trim() || null, key_file: i.key.value.trim() || null, server_name: i.sni.value.trim() || null };
    out.sasl = i.saslMech.value ? { mechanism: i.saslMech.value, username: i.saslUser.value, password: i.saslPass.value } : null;
    for (const [k, inp] of Object.entries(adv)) out[k] = Number(inp.value);
    out.routes = routes.map((r) => r.collect());
    return out;
  };
  const test = el("button", { type: "button", text: "Test connection", id: "test-connection" });
  test.addEventListener("click", async () => {
    test.disabled = true;
    clear(result, banner("info", "Connecting to the brokers…"));
    try {
      const r = await api("POST", "/api/uplink/test", collect());
      const detail = [];
      if (r.brokers && r.brokers.length) detail.push(el("li", { text: "Brokers: " + r.brokers.join(", ") }));
      if (r.topics && r.topics.length) detail.push(el("li", { text: "Topics: " + r.topics.join(", ") }));
      if (r.elapsed_ms !== undefined) detail.push(el("li", { text: "Took " + r.elapsed_ms + " ms" }));
      clear(result, banner(r.ok ? "ok" : "bad", (r.ok ? "Connection OK. " : "Connection failed. ") + (r.message || ""), detail.length ? el("ul", null, detail) : null));
    } catch (e) {
      clear(result, banner("bad", "Connection test failed: " + e.message));
    } finally { test.disabled = false; }
  });

  const node = el("div", null,
    el("div", { class: "fields" },
      field("Bootstrap servers", i.servers, { name: "kafka.bootstrap_servers", help: "host:port, one per line. Empty: the uplink is off and data stays buffered." }),
      field("Compression", i.compression, { name: "kafka.compression" }),
      field("Gateway id (record header)", i.gatewayId, { name: "kafka.gateway_id" }),
      field("Client id", i.clientId, { name: "kafka.client_id" })),
    el("fieldset", null, el("legend", { text: "Security" }),
      el("div", { class: "fields" }, field("Use TLS", i.tlsOn, { name: "kafka.tls.enabled" }), field("SASL mechanism", i.saslMech, { name: "kafka.sasl.mechanism" })),
      tlsBox, saslBox),
    el("fieldset", { data: { field: "kafka.routes" } }, el("legend", { text: "Routes (first match wins)" }),
      el("p", { class: "muted small", text: "Filter: MQTT topic filter (+ one level, # the rest). Key template: {topic}, {level[1]}, {client_id}… ; empty = no key." }),
      list, empty, addBtn),
    el("fieldset", null, el("legend", { text: "Messages matching no route" }),
      el("div", { class: "fields" },
        field("Unmatched messages", i.unmatched, { name: "kafka.unmatched" }),
        field("Default topic", i.defaultTopic, { name: "kafka.default_topic" }),
        field("Retained messages topic", i.retainedTopic, { name: "kafka.retained_topic", help: "Optional compacted topic, key = MQTT topic." }))),
    el("details", null, el("summary", { text: "Batching and timing (advanced)" }), advFields),
    result);
  return { node, collect, actions: [test] };
}

function routeRow(rc, move, del) {
  const i = {
    filter: textInput(rc.filter, { placeholder: "plant/+/temperature" }),
    topic: textInput(rc.topic, { placeholder: "telemetry" }),
    key: textInput(rc.key === undefined ? "{topic}" : rc.key),
    value: select([["raw", "raw payload"], ["json", "JSON envelope"]], rc.value || "raw"),
  };
  const idx = el("div", { class: "idx" });
  const f = {
    filter: field("MQTT filter", i.filter),
    topic: field("Kafka topic", i.topic),
    key: field("Key template", i.key),
    value: field("Value format", i.value),
  };
  const up = el("button", { type: "button", class: "small", text: "↑", attrs: { "aria-label": "Move up", title: "Move up" } });
  const down = el("button", { type: "button", class: "small", text: "↓", attrs: { "aria-label": "Move down", title: "Move down" } });
  const rm = el("button", { type: "button", class: "small danger", text: "Remove" });
  const r = {
    node: el("div", { class: "route" }, idx, f.filter, f.topic, f.key, f.value, isAdmin() ? el("div", { class: "ctl" }, up, down, rm) : el("div")),
    number: (n, total) => {
      idx.textContent = String(n + 1);
      for (const [k, w] of Object.entries(f)) w.dataset.field = `kafka.routes[${n}].${k}`;
      r.node.dataset.field = `kafka.routes[${n}]`;
      up.disabled = n === 0;
      down.disabled = n === total - 1;
    },
    collect: () => ({ ...rc, filter: i.filter.value.trim(), topic: i.topic.value.trim(), key: i.key.value, value: i.value.value }),
    focus: () => i.filter.focus(),
  };
  up.addEventListener("click", () => move(r, -1));
  down.addEventListener("click", () => move(r, 1));
  rm.addEventListener("click", () => del(r));
  return r;
}
