// MQTT: listeners, TLS, anonymous access, users, topic rules, limits, connected clients.
import {
  el, api, clear, banner, field, textInput, numInput, checkbox, select, sectionForm, pageHead, poll, isAdmin, session,
  confirmDialog, dialog, fmtAgo, fmtNum, fmtBytes, pill, lines, showError, clearErrors, savedBanner,
} from "/assets/app.js";

export async function render(main) {
  main.appendChild(pageHead("MQTT", "The embedded broker: MQTT 3.1.1 and 5 on every listener."));
  const form = await sectionForm(main, "mqtt", "Broker settings", build);
  const cfg = form ? form.cfg : null;
  rulesCard(main, cfg);
  limitsCard(main, cfg);
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

// ---------- topic rules ([[mqtt.acl]]) ----------

const ACTIONS = [["publish", "Publish"], ["subscribe", "Subscribe"], ["all", "Publish and subscribe"]];
const PERMISSIONS = [["allow", "Allow"], ["deny", "Deny"]];
const label = (list, v) => (list.find(([k]) => k === v) || [v, String(v)])[1];

/** The protected parts an allow rule's filter opens (as the broker decides it: named literally). */
function opens(rule, filter) {
  if (rule.permission !== "allow") return [];
  const publish = rule.action !== "subscribe";
  const [l0 = "", l1, l2] = filter.split("/");
  const out = [];
  if (l0.startsWith("$") && !/[%+#]/.test(l0)) out.push(l0 + " topics");
  if (publish && l0 === "spBv1.0") {
    if (l2 === "NCMD" || l2 === "DCMD") out.push(l2);
    if (l1 === "STATE") out.push("STATE");
  }
  return out;
}

function userLabel(u) {
  if (u === "*") return [el("span", { class: "mono", text: "*" }), el("span", { class: "muted small", text: " any user" })];
  if (u === "$anonymous") return [el("span", { class: "mono", text: "$anonymous" }), el("span", { class: "muted small", text: " no user name" })];
  return el("span", { class: "mono", text: u });
}

const code = (t) => el("code", { text: t });

/**
 * The topic rules as an ordered table with its own Save: the whole `[mqtt]` section is read
 * again, only `acl` and `client_id_prefix_user` change, everything else (secrets "********"
 * included) goes back as read. `cfg` is the Broker settings form's copy, kept in step so that
 * its Save does not put the old rules back.
 */
function rulesCard(main, cfg) {
  const card = el("section", { class: "card", id: "mqtt-rules" }, el("h2", { text: "Topic rules" }));
  main.appendChild(card);
  if (!cfg) { card.appendChild(banner("bad", "The broker settings could not be loaded, so the rules cannot be shown.")); return; }
  const admin = isAdmin();
  const slot = el("div");
  const rules = (cfg.acl || []).map((r) => ({ ...r, users: [...(r.users || [])], topics: [...(r.topics || [])] }));
  const prefix = checkbox(cfg.client_id_prefix_user);
  prefix.id = "mqtt-client-id-prefix";
  const status = el("span", { class: "muted small", attrs: { "aria-live": "polite" } });
  const changed = () => { status.textContent = "Unsaved changes: Save rules to keep them."; };
  prefix.addEventListener("change", changed);
  const body = el("tbody");

  const draw = () => {
    clear(body, rules.length ? rules.map((r, n) => ruleRow(r, n)) : el("tr", null, el("td", {
      class: "empty wrap", colSpan: admin ? 6 : 5,
      text: "No rules: every client may publish and subscribe to every topic except the protected ones.",
    })));
  };
  const ruleRow = (r, n) => {
    const f = `mqtt.acl[${n}]`;
    const btn = (text, action, attrs, fn) => el("button", {
      type: "button", class: "small" + (action === "remove" ? " danger" : ""), text,
      attrs, data: { action: "rule-" + action, rule: n }, on: { click: fn },
    });
    return el("tr", { data: { rule: n } },
      el("td", { class: "num", text: String(n + 1) }),
      el("td", { data: { field: f + ".users" } },
        r.users.map((u, j) => el("div", { class: "field", data: { field: `${f}.users[${j}]` } }, el("div", null, userLabel(u))))),
      el("td", { data: { field: f + ".action" }, text: label(ACTIONS, r.action) }),
      el("td", { data: { field: f + ".permission" } }, pill(r.permission === "allow" ? "ok" : "bad", label(PERMISSIONS, r.permission))),
      el("td", { data: { field: f + ".topics" } },
        r.topics.map((t, j) => el("div", { class: "field", data: { field: `${f}.topics[${j}]` } },
          el("div", null, el("span", { class: "mono", text: t }), opens(r, t).map((p) => [" ", pill("warn", "opens " + p)]))))),
      admin ? el("td", null, el("div", { class: "actions" },
        btn("↑", "up", { "aria-label": "Move rule " + (n + 1) + " up", title: "Move up", disabled: n === 0 }, () => move(n, -1)),
        btn("↓", "down", { "aria-label": "Move rule " + (n + 1) + " down", title: "Move down", disabled: n === rules.length - 1 }, () => move(n, 1)),
        btn("Edit", "edit", { "aria-label": "Edit rule " + (n + 1) }, async () => {
          const r2 = await editRule(r, false, Object.keys(cfg.users || {}));
          if (r2) { rules[n] = r2; draw(); changed(); }
        }),
        btn("Remove", "remove", { "aria-label": "Remove rule " + (n + 1) }, () => { rules.splice(n, 1); draw(); changed(); }))) : null);
  };
  const move = (n, d) => {
    const m = n + d;
    if (m < 0 || m >= rules.length) return;
    [rules[n], rules[m]] = [rules[m], rules[n]];
    draw();
    changed();
  };
  draw();

  const add = admin ? el("button", { type: "button", id: "add-rule", text: "Add rule", on: { click: async () => {
    const r = await editRule({ users: [], action: "publish", permission: "allow", topics: [] }, true, Object.keys(cfg.users || {}));
    if (r) { rules.push(r); draw(); changed(); }
  } } }) : null;

  const form = el("form", { attrs: { novalidate: true } },
    el("ul", { class: "muted small" },
      el("li", null, "The first rule whose users, action and topic filter match a publish or subscription decides. Users: names, ",
        code("*"), " (any client with a user name), ", code("$anonymous"), " (clients without one). Filters: ", code("+"), " one level, ",
        code("#"), " the rest, ", code("%u"), " the user name, ", code("%c"), " the client id."),
      el("li", null, el("strong", { text: "Without rules" }), " every client may use every topic except the protected ones. ",
        el("strong", { text: "With rules" }), ", everything no rule allows is denied."),
      el("li", null, el("strong", { text: "Protected, closed unless an allow rule names them literally:" }), " publishing Sparkplug commands (",
        code("spBv1.0/<group>/NCMD/…"), ", ", code("…/DCMD/…"), ") and host state (", code("spBv1.0/STATE/…"), "), and any ",
        code("$"), "-topic such as ", code("$SYS/#"), ". ", code("#"), " does not open them; ", code("spBv1.0/+/DCMD/#"), " opens DCMD.")),
    el("div", { class: "table-wrap" }, el("table", { id: "mqtt-acl" },
      el("thead", null, el("tr", null, ["#", "Users", "Action", "Permission", "Topic filters", admin ? "" : null].map((h) => (h === null ? null : el("th", { class: h === "#" ? "num" : "", text: h }))))),
      body)),
    add ? el("div", { class: "result" }, add) : null,
    el("div", { class: "fields" },
      field("Client id must start with the user name", prefix, {
        name: "mqtt.client_id_prefix_user", wide: true,
        help: "A client that logs in with a user name must use a client id equal to it or starting with it; useful with %c rules.",
      })));
  card.append(slot, form);
  if (!admin) {
    form.appendChild(el("p", { class: "muted small", text: "Read-only: your account has the " + session.role + " role." }));
    return;
  }
  const save = el("button", { type: "submit", class: "primary", id: "save-rules", text: "Save rules" });
  form.appendChild(el("div", { class: "form-actions" }, save, status));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    clear(slot);
    save.disabled = true;
    try {
      // The section as stored now (another tab or the form above may have changed it).
      const all = await api("GET", "/api/config");
      const section = { ...(all.mqtt || {}) };
      section.acl = rules.map((r) => ({ ...r, users: [...r.users], topics: [...r.topics] }));
      section.client_id_prefix_user = prefix.checked;
      const res = await api("PUT", "/api/config/mqtt", section);
      cfg.acl = section.acl;
      cfg.client_id_prefix_user = section.client_id_prefix_user;
      status.textContent = "";
      clear(slot, savedBanner(res));
    } catch (e) {
      showError(form, e, slot);
    } finally { save.disabled = false; }
  });
}

/** The rule dialog; resolves with the edited rule, or null when cancelled. */
async function editRule(rule, isNew, knownUsers) {
  const users = el("textarea", { id: "rule-users", value: rule.users.join("\n"), attrs: { rows: 2, spellcheck: "false", placeholder: "scada" } });
  const action = select(ACTIONS, rule.action);
  action.id = "rule-action";
  const permission = select(PERMISSIONS, rule.permission);
  permission.id = "rule-permission";
  const topics = el("textarea", { id: "rule-topics", value: rule.topics.join("\n"), attrs: { rows: 3, spellcheck: "false", placeholder: "plant/%u/#" } });
  const err = el("div", { class: "err", attrs: { role: "alert" } });
  const body = el("div", { class: "fields" },
    field("Users", users, { wide: true, help: "One per line: a name, * (any user) or $anonymous." + (knownUsers.length ? " Accounts: " + knownUsers.join(", ") + "." : "") }),
    field("Action", action),
    field("Permission", permission),
    field("Topic filters", topics, { wide: true, help: "One per line, e.g. plant/%u/# or spBv1.0/+/DCMD/#." }),
    err);
  for (;;) {
    const ok = await dialog(isNew ? "Add topic rule" : "Edit topic rule", body,
      [{ label: "Cancel", value: false }, { label: isNew ? "Add rule" : "Apply", value: true, class: "primary" }]);
    if (!ok) return null;
    const out = { ...rule, users: lines(users.value), action: action.value, permission: permission.value, topics: lines(topics.value) };
    if (!out.users.length) { err.textContent = "Name at least one user, * or $anonymous."; continue; }
    if (!out.topics.length) { err.textContent = "List at least one topic filter."; continue; }
    return out;
  }
}

// ---------- limits ----------

/** The broker's sizes against the configured limits, and its refusals since start (`/api/status`). */
function limitsCard(main, cfg) {
  const c = cfg || {};
  const slot = el("div");
  const inUse = el("dl", { class: "kv" });
  const refused = el("dl", { class: "kv" });
  main.appendChild(el("section", { class: "card", id: "mqtt-limits" }, el("h2", { text: "Limits" }), slot,
    el("div", { class: "grid" },
      el("div", null, el("div", { class: "lbl", text: "In use" }), inUse),
      el("div", null, el("div", { class: "lbl", text: "Refused since start" }), refused)),
    el("div", { class: "muted small", text: "Limits from the saved configuration (a change applies after a restart); refusals since the broker started, also in /metrics." })));
  const of = (n, max, fmt = fmtNum) => {
    const near = max && n >= 0.9 * max;
    return el("span", { class: near ? "err" : "", text: fmt(n) + (max ? " of " + fmt(max) : "") });
  };
  const warnIf = (n) => (n > 0 ? el("span", { class: "err", text: fmtNum(n) }) : "0");
  const fill = (dl, rows) => clear(dl, rows.map(([k, name, v]) => [el("dt", { text: name }), el("dd", { data: { key: k } }, v)]));
  poll(async () => {
    let s;
    try { s = await api("GET", "/api/status"); } catch (e) { clear(slot, banner("bad", "Cannot read the broker's counters: " + e.message)); return; }
    clear(slot);
    const m = s.mqtt || {};
    const r = m.refused || {};
    fill(inUse, [
      ["sockets", "Sockets", of(m.sockets, c.max_connections)],
      ["sessions", "Sessions", of(m.sessions, c.max_sessions)],
      ["subscriptions", "Subscriptions", fmtNum(m.subscriptions) + (c.max_subscriptions_per_client ? " (" + fmtNum(c.max_subscriptions_per_client) + " per client)" : "")],
      ["retained_messages", "Retained messages", of(m.retained_messages, c.max_retained_messages)],
      ["retained_bytes", "Retained size", of(m.retained_bytes, c.max_retained_bytes, fmtBytes)],
      ["queued_bytes", "Queued for clients", of(m.queued_bytes, c.max_queued_bytes_total, fmtBytes)],
    ]);
    fill(refused, [
      ["max_connections", "At max. connections", warnIf(r.max_connections)],
      ["per_address", "Per-address limit", warnIf(r.per_address)],
      ["auth_busy", "Logins, checks busy", warnIf(r.auth_busy)],
      ["auth_throttled", "Logins throttled", warnIf(r.auth_throttled)],
      ["acl_denied", "Denied by topic rules", warnIf(r.acl_denied)],
      ["subscriptions", "Subscriptions", warnIf(r.subscriptions)],
      ["retained", "Retained messages", warnIf(r.retained)],
      ["messages_dropped", "Messages dropped", warnIf(r.messages_dropped)],
      ["keep_alive_timeouts", "Keep-alive timeouts", warnIf(r.keep_alive_timeouts)],
    ]);
  }, 5000);
}
