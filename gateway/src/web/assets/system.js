// System: version, uptime, logs, config TOML, restart, password, users, API tokens, certificate.
import {
  el, api, clear, banner, toast, dialog, confirmDialog, field, textInput, select, showError, clearErrors, savedBanner,
  isAdmin, session, pageHead, fmtDuration, fmtTime, restartFlow, poll,
} from "/assets/app.js";

export async function render(main) {
  main.appendChild(pageHead("System", "Gateway information, configuration file, accounts and maintenance."));
  const info = el("section", { class: "card", id: "system-info" }, el("h2", { text: "Gateway" }), el("div", { class: "muted", text: "Loading…" }));
  const grid = el("div", { class: "grid" }, info, configCard(), passwordCard());
  main.appendChild(grid);
  loadInfo(info);
  if (isAdmin()) {
    main.append(el("section", { class: "card" }, el("h2", { text: "Audit trail" }),
      el("p", { class: "muted", text: "Logins, configuration changes, accounts, certificates, restarts and every device write or command." }),
      el("a", { class: "btn", href: "/audit", text: "Open the audit trail", id: "open-audit" })));
    main.append(usersCard(), tokensCard(), certCard());
  }
  main.appendChild(logsCard());
}

async function loadInfo(card) {
  let s;
  try { s = await api("GET", "/api/system"); } catch (e) { clear(card, el("h2", { text: "Gateway" }), banner("bad", e.message)); return; }
  const kv = el("dl", { class: "kv" });
  for (const [k, v] of [["Version", s.version], ["Uptime", fmtDuration((s.uptime_s || 0) * 1000)], ["Host name", s.hostname], ["Configuration", s.config_path], ["State directory", s.state_dir]]) {
    kv.append(el("dt", { text: k }), el("dd", { class: k === "Configuration" || k === "State directory" ? "mono" : "", text: v === undefined ? "–" : String(v) }));
  }
  clear(card, el("h2", { text: "Gateway" }),
    s.restart_required ? banner("warn", "A saved change takes effect after a restart.") : null,
    kv,
    isAdmin() ? el("div", { class: "form-actions" }, el("button", { type: "button", class: "danger", text: "Restart gateway…", id: "restart", on: { click: restartFlow } })) : null);
}

function configCard() {
  const slot = el("div");
  const file = el("input", { type: "file", class: "hidden", attrs: { accept: ".toml,text/plain" } });
  file.addEventListener("change", async () => {
    const f = file.files && file.files[0];
    file.value = "";
    if (!f) return;
    if (f.size > 256 * 1024) { clear(slot, banner("bad", "The file is larger than 256 KiB.")); return; }
    if (!(await confirmDialog("Replace the configuration?", "Upload " + f.name + " as the gateway's whole configuration? It is validated first; nothing changes if it has errors.", "Upload and apply", true))) return;
    try {
      const res = await api("PUT", "/api/config/toml", { text: await f.text(), type: "application/toml" });
      clear(slot, savedBanner(res));
    } catch (e) {
      const list = e.fields.length ? el("ul", null, e.fields.map((x) => el("li", { text: (x.line ? "line " + x.line + ": " : "") + (x.field ? x.field + ": " : "") + x.message }))) : null;
      clear(slot, banner("bad", "The file was not accepted: " + e.message, list));
    }
  });
  return el("section", { class: "card" }, el("h2", { text: "Configuration file" }),
    el("p", { class: "muted", text: "The whole configuration as TOML, with secrets masked. Upload replaces it after validation." }),
    slot,
    el("div", { class: "form-actions" },
      isAdmin() ? el("a", { class: "btn", href: "/api/config/toml", text: "Download TOML", attrs: { download: "ironbridge.toml" } }) : null,
      isAdmin() ? el("button", { type: "button", text: "Upload TOML…", on: { click: () => file.click() } }) : null, file,
      isAdmin() ? null : el("span", { class: "muted small", text: "Administrators can download and upload the file." })));
}

function passwordCard() {
  const cur = textInput("", { type: "password", autocomplete: "current-password" });
  const n1 = textInput("", { type: "password", autocomplete: "new-password" });
  const n2 = textInput("", { type: "password", autocomplete: "new-password" });
  const slot = el("div");
  const form = el("form", { id: "password-form", attrs: { novalidate: true } },
    el("div", { class: "fields" },
      field("Current password", cur, { name: "current", always: true }),
      field("New password", n1, { name: "new", always: true, help: "At least 10 characters; common passwords are refused." }),
      field("Repeat new password", n2, { name: "new2", always: true })),
    el("div", { class: "form-actions" }, el("button", { type: "submit", class: "primary", text: "Change password" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    clear(slot);
    if (n1.value !== n2.value) { showError(form, { status: 422, message: "", fields: [{ field: "new2", message: "The passwords do not match." }] }, slot); return; }
    try {
      await api("POST", "/api/password", { current: cur.value, new: n1.value });
      cur.value = n1.value = n2.value = "";
      clear(slot, banner("ok", "Password changed."));
    } catch (e) { showError(form, e, slot); }
  });
  return el("section", { class: "card" }, el("h2", null, "Your password ", el("span", { class: "muted small", text: session.user })), slot, form);
}

function usersCard() {
  const body = el("tbody");
  const slot = el("div");
  const load = async () => {
    let users;
    try { users = await api("GET", "/api/users"); } catch (e) { clear(slot, banner("bad", e.message)); return; }
    clear(body, users.map((u) => {
      const name = u.username || u.name;
      const role = select([["admin", "admin"], ["operator", "operator"], ["viewer", "viewer"]], u.role);
      role.setAttribute("aria-label", "Role of " + name);
      role.disabled = name === session.user;
      role.addEventListener("change", async () => {
        try { await api("PUT", "/api/users/" + encodeURIComponent(name), { role: role.value }); toast("Role of " + name + " changed to " + role.value + ".", "ok"); } catch (e) { toast(e.message, "bad"); load(); }
      });
      return el("tr", null, el("td", { class: "mono", text: name }), el("td", null, role),
        el("td", null, name === session.user ? el("span", { class: "muted small", text: "(you)" }) : el("div", { class: "actions" },
          el("button", { type: "button", class: "small", text: "Set password…", on: { click: () => setPassword(name) } }),
          el("button", { type: "button", class: "small danger", text: "Delete", on: { click: async () => {
            if (!(await confirmDialog("Delete user?", "Delete the account “" + name + "”? Its sessions end.", "Delete", true))) return;
            try { await api("DELETE", "/api/users/" + encodeURIComponent(name)); load(); } catch (e) { toast(e.message, "bad"); }
          } } }))));
    }));
  };
  const nu = textInput("", { autocomplete: "off" });
  const np = textInput("", { type: "password", autocomplete: "new-password" });
  const nr = select([["viewer", "viewer (read only)"], ["operator", "operator (writes tags)"], ["admin", "admin"]], "viewer");
  const form = el("form", { id: "add-user", attrs: { novalidate: true } },
    el("h3", { text: "Add a user" }),
    el("div", { class: "fields" }, field("Username", nu, { name: "username" }), field("Password", np, { name: "password" }), field("Role", nr, { name: "role" })),
    el("div", { class: "form-actions" }, el("button", { type: "submit", class: "primary", text: "Add user" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form); clear(slot);
    try {
      await api("POST", "/api/users", { username: nu.value.trim(), password: np.value, role: nr.value });
      clear(slot, banner("ok", "User " + nu.value.trim() + " added."));
      nu.value = np.value = "";
      load();
    } catch (e) { showError(form, e, slot); }
  });
  load();
  return el("section", { class: "card", id: "users" }, el("h2", { text: "Web users" }), slot,
    el("div", { class: "table-wrap" }, el("table", null, el("thead", null, el("tr", null, ["User", "Role", ""].map((h) => el("th", { text: h })))), body)), form);
}

async function setPassword(name) {
  const p = textInput("", { type: "password", autocomplete: "new-password", id: "set-pass" });
  const ok = await dialog("Set password for " + name, el("div", { class: "field" }, el("label", { text: "New password", attrs: { for: "set-pass" } }), p),
    [{ label: "Cancel", value: false }, { label: "Set password", value: true, class: "primary" }]);
  if (!ok) return;
  try { await api("PUT", "/api/users/" + encodeURIComponent(name), { password: p.value }); toast("Password of " + name + " changed.", "ok"); } catch (e) { toast(e.message, "bad"); }
}

function tokensCard() {
  const body = el("tbody");
  const slot = el("div");
  const load = async () => {
    let list;
    try { list = await api("GET", "/api/tokens"); } catch (e) { clear(slot, banner("bad", e.message)); return; }
    clear(body, list.length ? list.map((t) => el("tr", null,
      el("td", { text: t.name || t.id }), el("td", { text: t.role || "" }), el("td", { text: fmtTime(t.created_at || t.created) }),
      el("td", null, el("button", { type: "button", class: "small danger", text: "Revoke", on: { click: async () => {
        if (!(await confirmDialog("Revoke token?", "Revoke “" + (t.name || t.id) + "”? Scripts using it stop working.", "Revoke", true))) return;
        try { await api("DELETE", "/api/tokens/" + encodeURIComponent(t.id)); load(); } catch (e) { toast(e.message, "bad"); }
      } } }))))
      : el("tr", null, el("td", { class: "empty", colSpan: 4, text: "No API tokens." })));
  };
  const nn = textInput("", { placeholder: "prometheus" });
  const nr = select([["viewer", "viewer (read only)"], ["operator", "operator (writes tags)"], ["admin", "admin"]], "viewer");
  const form = el("form", { attrs: { novalidate: true } },
    el("div", { class: "fields" }, field("Token name", nn, { name: "name" }), field("Role", nr, { name: "role" })),
    el("div", { class: "form-actions" }, el("button", { type: "submit", class: "primary", text: "Create token" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form); clear(slot);
    try {
      const t = await api("POST", "/api/tokens", { name: nn.value.trim(), role: nr.value });
      nn.value = "";
      clear(slot, banner("ok", "Token created. Copy it now: it is shown only once.", el("div", { class: "secret mono", text: t.token || "" })));
      load();
    } catch (e) { showError(form, e, slot); }
  });
  load();
  return el("section", { class: "card", id: "tokens" }, el("h2", { text: "API tokens" }),
    el("p", { class: "muted small", text: "For scripts and Prometheus: send “Authorization: Bearer <token>”." }), slot,
    el("div", { class: "table-wrap" }, el("table", null, el("thead", null, el("tr", null, ["Name", "Role", "Created", ""].map((h) => el("th", { text: h })))), body)), form);
}

function certCard() {
  const cert = el("textarea", { attrs: { rows: 5, placeholder: "-----BEGIN CERTIFICATE-----" } });
  const key = el("textarea", { attrs: { rows: 5, placeholder: "-----BEGIN PRIVATE KEY-----" } });
  const slot = el("div");
  const fileInto = (ta) => {
    const f = el("input", { type: "file", attrs: { accept: ".pem,.crt,.key", "aria-label": "Load from file" } });
    f.addEventListener("change", async () => { if (f.files && f.files[0]) ta.value = await f.files[0].text(); f.value = ""; });
    return f;
  };
  const form = el("form", { attrs: { novalidate: true } },
    el("div", { class: "fields" },
      field("Certificate chain (PEM)", cert, { name: "cert_pem", wide: true }), fileInto(cert),
      field("Private key (PEM)", key, { name: "key_pem", wide: true }), fileInto(key)),
    el("div", { class: "form-actions" }, el("button", { type: "submit", class: "primary", text: "Upload certificate" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form); clear(slot);
    try {
      const res = await api("PUT", "/api/web/certificate", { cert_pem: cert.value, key_pem: key.value });
      key.value = "";
      clear(slot, res && res.restart_required ? savedBanner(res) : banner("ok", "Certificate installed." + (res && res.message ? " " + res.message : "")));
    } catch (e) { showError(form, e, slot); }
  });
  return el("section", { class: "card", id: "certificate" }, el("h2", { text: "HTTPS certificate" }),
    el("p", { class: "muted small", text: "Replace the self-signed certificate with one from your plant's CA." }), slot, form);
}

function logsCard() {
  const body = el("tbody");
  const slot = el("div");
  const level = select([["", "All levels"], ["WARN", "Warnings and errors"], ["ERROR", "Errors"]], "");
  level.setAttribute("aria-label", "Level filter");
  let entries = [];
  const draw = () => {
    const order = { ERROR: 3, WARN: 2, INFO: 1, DEBUG: 0, TRACE: 0 };
    const min = order[level.value] || 0;
    const shown = entries.filter((e) => (order[String(e.level).toUpperCase()] || 0) >= min).slice().reverse();
    clear(body, shown.length ? shown.map((e) => el("tr", null,
      el("td", { text: fmtTime(e.ts) }), el("td", { class: "lvl-" + String(e.level).toUpperCase(), text: String(e.level).toUpperCase() }),
      el("td", { text: e.target || "" }), el("td", { class: "msg", text: e.message })))
      : el("tr", null, el("td", { class: "empty", colSpan: 4, text: "No log lines." })));
  };
  level.addEventListener("change", draw);
  poll(async () => {
    try { entries = await api("GET", "/api/logs?lines=200"); clear(slot); draw(); } catch (e) { clear(slot, banner("bad", "Cannot read logs: " + e.message)); }
  }, 5000);
  return el("section", { class: "card", id: "logs" }, el("h2", null, "Recent log", level), slot,
    el("div", { class: "table-wrap scroll-y" }, el("table", { class: "logs" }, el("thead", null, el("tr", null, ["Time", "Level", "Target", "Message"].map((h) => el("th", { text: h })))), body)));
}
