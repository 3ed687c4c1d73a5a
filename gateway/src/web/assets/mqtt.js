// MQTT: listeners, TLS, anonymous access, users, connected clients.
import {
  el, api, clear, banner, field, textInput, numInput, checkbox, sectionForm, pageHead, poll, isAdmin,
  confirmDialog, fmtAgo, pill,
} from "/assets/app.js";

export async function render(main) {
  main.appendChild(pageHead("MQTT", "The embedded broker: MQTT 3.1.1 and 5 on every listener."));
  await sectionForm(main, "mqtt", "Broker settings", build);
  clientsCard(main);
}

function build(cfg) {
  const tls = cfg.tls || null;
  const i = {
    listen: textInput(cfg.listen, { id: "mqtt-listen" }),
    anon: checkbox(cfg.allow_anonymous),
    tlsOn: checkbox(!!tls),
    tlsListen: textInput(tls ? tls.listen : "0.0.0.0:8883"),
    cert: textInput(tls ? tls.cert : "", { placeholder: "/etc/ironbridge/tls/mqtt.pem" }),
    key: textInput(tls ? tls.key : "", { placeholder: "/etc/ironbridge/tls/mqtt.key" }),
    maxPayload: numInput(cfg.max_payload_bytes, { min: 1, step: 1 }),
    maxConn: numInput(cfg.max_connections, { min: 1, step: 1 }),
    connTimeout: numInput(cfg.connect_timeout_ms, { min: 1, step: 1 }),
  };
  const tlsBox = el("div", { class: "fields" },
    field("TLS listen address", i.tlsListen, { name: "mqtt.tls.listen" }),
    field("Certificate (PEM file)", i.cert, { name: "mqtt.tls.cert" }),
    field("Private key (PEM file)", i.key, { name: "mqtt.tls.key" }));
  const syncTls = () => tlsBox.classList.toggle("hidden", !i.tlsOn.checked);
  i.tlsOn.addEventListener("change", syncTls);
  syncTls();

  // Users: name → hash ("********" as read); a new password is sent in plain text and hashed by the server.
  const users = new Map(Object.entries(cfg.users || {}));
  const userBody = el("tbody");
  const drawUsers = () => {
    clear(userBody, users.size ? [...users.keys()].map((u) => el("tr", null,
      el("td", { class: "mono", text: u }),
      el("td", { text: users.get(u) === null ? "new password (saved on Save)" : "password set" }),
      el("td", null, isAdmin() ? el("button", { type: "button", class: "small danger", text: "Remove", data: { action: "remove-user" }, on: { click: async () => {
        if (await confirmDialog("Remove MQTT user?", "Remove “" + u + "”? Clients using this account are refused at their next connect (after Save).", "Remove", true)) { users.delete(u); drawUsers(); }
      } } }) : null)))
      : el("tr", null, el("td", { class: "empty", colSpan: 3, text: "No MQTT users. Clients can only connect anonymously (if allowed)." })));
  };
  const newPass = new Map();
  drawUsers();
  const nu = textInput("", { placeholder: "username", "aria-label": "New MQTT username" });
  const np = textInput("", { type: "password", placeholder: "password", autocomplete: "new-password", "aria-label": "New MQTT password" });
  const addUser = el("div", { class: "row" }, nu, np, el("button", { type: "button", text: "Add user", on: { click: () => {
    const u = nu.value.trim();
    if (!u || !np.value) return;
    users.set(u, null);
    newPass.set(u, np.value);
    nu.value = ""; np.value = "";
    drawUsers();
  } } }));

  const node = el("div", null,
    el("div", { class: "fields" },
      field("Listen address (plain TCP)", i.listen, { name: "mqtt.listen", help: "host:port, e.g. 0.0.0.0:1883" }),
      field("Allow anonymous clients", i.anon, { name: "mqtt.allow_anonymous", help: "Clients that send a username are always checked." })),
    el("fieldset", null, el("legend", { text: "TLS listener" }),
      field("Enable the TLS listener", i.tlsOn, { name: "mqtt.tls" }), tlsBox),
    el("fieldset", { data: { field: "mqtt.users" } }, el("legend", { text: "Users" }),
      el("div", { class: "table-wrap" }, el("table", { id: "mqtt-users" },
        el("thead", null, el("tr", null, ["Username", "Password", ""].map((h) => el("th", { text: h })))), userBody)),
      isAdmin() ? el("div", { class: "result" }, addUser) : null),
    el("details", null, el("summary", { text: "Limits (advanced)" }),
      el("div", { class: "fields" },
        field("Max payload (bytes)", i.maxPayload, { name: "mqtt.max_payload_bytes" }),
        field("Max connections", i.maxConn, { name: "mqtt.max_connections" }),
        field("Connect timeout (ms)", i.connTimeout, { name: "mqtt.connect_timeout_ms" }))));

  const collect = () => {
    const out = { ...cfg };
    out.listen = i.listen.value.trim();
    out.allow_anonymous = i.anon.checked;
    out.tls = i.tlsOn.checked ? { listen: i.tlsListen.value.trim(), cert: i.cert.value.trim(), key: i.key.value.trim() } : null;
    out.max_payload_bytes = Number(i.maxPayload.value);
    out.max_connections = Number(i.maxConn.value);
    out.connect_timeout_ms = Number(i.connTimeout.value);
    const u = {};
    for (const [name, hash] of users) u[name] = hash === null ? newPass.get(name) : hash;
    out.users = u;
    return out;
  };
  return { node, collect };
}

function clientsCard(main) {
  const body = el("tbody");
  const slot = el("div");
  const count = el("span", { class: "muted small" });
  main.appendChild(el("section", { class: "card" }, el("h2", null, "Connected clients", count), slot,
    el("div", { class: "table-wrap" }, el("table", { id: "mqtt-clients" },
      el("thead", null, el("tr", null, ["Client id", "Username", "Remote address", "Protocol", "TLS", "Connected"].map((h) => el("th", { text: h })))), body))));
  poll(async () => {
    let list;
    try { list = await api("GET", "/api/mqtt/clients"); } catch (e) { clear(slot, banner("bad", "Cannot list clients: " + e.message)); return; }
    clear(slot);
    count.textContent = list.length + " connected";
    clear(body, list.length ? list.map((c) => el("tr", null,
      el("td", { class: "mono", text: c.client_id }), el("td", { text: c.username || "(anonymous)" }),
      el("td", { class: "mono", text: c.remote }), el("td", { text: "MQTT " + c.protocol }),
      el("td", null, c.tls ? pill("ok", "TLS") : pill("idle", "Plain")), el("td", { text: fmtAgo(c.connected_at) })))
      : el("tr", null, el("td", { class: "empty", colSpan: 6, text: "No clients connected." })));
  }, 5000);
}
