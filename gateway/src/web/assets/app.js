// Ironbridge web UI: the shell (session, navigation, layout) and the helpers every page uses.
// Rules: no framework, no inline script/style (CSP), data only via textContent/createElement.

export const NAV = [
  ["/dashboard", "Dashboard"],
  ["/devices", "Devices"],
  ["/mqtt", "MQTT"],
  ["/sparkplug", "Sparkplug"],
  ["/uplink", "Uplink"],
  ["/buffer", "Buffer"],
  ["/system", "System"],
];

export const session = { user: "", role: "viewer", csrf: "" };
export const isAdmin = () => session.role === "admin";
// Operators (and admins) write tags and send device commands; only admins change configuration.
export const canOperate = () => session.role === "admin" || session.role === "operator";

// ---------- DOM ----------

/** Builds an element. `props`: class, text, attrs {}, data {}, on {event: fn}, and plain properties. */
export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k === "attrs") for (const [a, av] of Object.entries(v)) { if (av !== undefined && av !== null && av !== false) e.setAttribute(a, av === true ? "" : String(av)); }
      else if (k === "data") for (const [a, av] of Object.entries(v)) e.dataset[a] = String(av);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e[k] = v;
    }
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(node, ...children) {
  while (node.firstChild) node.removeChild(node.firstChild);
  append(node, children);
  return node;
}

// ---------- formatting ----------

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtBytes(b) {
  if (b === null || b === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(b);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : 1)) + " " + u[i];
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  let s = Math.floor(ms / 1000);
  if (s < 1) return ms + " ms";
  if (s < 60) return s + " s";
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  return `${m} min ${s} s`;
}

/** A timestamp (ms since the epoch, or an ISO string) → Date, or null. */
export function toDate(ts) {
  if (ts === null || ts === undefined || ts === "") return null;
  const d = typeof ts === "number" ? new Date(ts) : new Date(String(ts));
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtTime(ts) {
  const d = toDate(ts);
  if (!d) return "–";
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtAgo(ts) {
  const d = toDate(ts);
  if (!d) return "never";
  const ms = Date.now() - d.getTime();
  return ms < 1500 ? "just now" : fmtDuration(Math.max(0, ms)) + " ago";
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(8)));
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A status pill: kind is ok | warn | bad | idle; the text always says the state (not colour only). */
export function pill(kind, text) {
  return el("span", { class: "pill " + kind, text });
}

// ---------- API ----------

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.fields = (body && Array.isArray(body.fields)) ? body.fields : [];
  }
}

/** Calls the JSON API. `body`: an object (sent as JSON) or { text, type } (sent as is). */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  if (body !== undefined) {
    if (body && typeof body.text === "string" && body.type) {
      headers["Content-Type"] = body.type;
      init.body = body.text;
    } else {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: "network", message: "The gateway did not answer (" + e.message + ")." });
  }
  const type = res.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await res.json().catch(() => null) : await res.text();
  if (res.status === 401 && !opts.allow401) {
    goLogin();
    throw new ApiError(401, { error: "unauthenticated", message: "Your session has ended. Please sign in again." });
  }
  if (!res.ok) {
    const b = data && typeof data === "object" ? data : { error: "http", message: (typeof data === "string" && data.trim().slice(0, 300)) || `HTTP ${res.status}` };
    if (res.status === 429) {
      const after = res.headers.get("Retry-After");
      if (after) b.retry_after = Number(after);
    }
    throw new ApiError(res.status, b);
  }
  return data;
}

export function goLogin() {
  const here = location.pathname + location.search;
  if (location.pathname === "/login" || location.pathname === "/setup") return;
  location.replace("/login?next=" + encodeURIComponent(here));
}

// ---------- feedback ----------

let toastBox = null;
export function toast(text, kind = "") {
  if (!toastBox) { toastBox = el("div", { class: "toasts", attrs: { role: "status", "aria-live": "polite" } }); document.body.appendChild(toastBox); }
  const t = el("div", { class: "toast " + kind, text });
  toastBox.appendChild(t);
  setTimeout(() => t.remove(), kind === "bad" ? 8000 : 4000);
}

export function banner(kind, text, ...extra) {
  return el("div", { class: "banner " + kind, attrs: { role: kind === "bad" ? "alert" : "status" } }, text, ...extra);
}

/** A modal dialog; resolves with the value of the button pressed (or null when dismissed). */
export function dialog(title, body, buttons) {
  return new Promise((resolve) => {
    const foot = el("div", { class: "dlg-foot" });
    const d = el("dialog", { attrs: { "aria-label": title } },
      el("div", { class: "dlg-head", text: title }),
      el("div", { class: "dlg-body" }, body),
      foot);
    let result = null;
    for (const b of buttons) {
      foot.appendChild(el("button", { type: "button", class: b.class || "", text: b.label, on: { click: () => { result = b.value; d.close(); } } }));
    }
    d.addEventListener("close", () => { d.remove(); resolve(result); });
    document.body.appendChild(d);
    d.showModal();
  });
}

export function confirmDialog(title, message, action, danger = false) {
  const body = Array.isArray(message) ? message.map((m) => (m instanceof Node ? m : el("p", { text: m }))) : el("p", { text: message });
  return dialog(title, body, [
    { label: "Cancel", value: false },
    { label: action, value: true, class: danger ? "danger solid" : "primary" },
  ]).then((v) => v === true);
}

// ---------- forms ----------

let uid = 0;

/** A labelled field; `name` (dotted config path) is where API field errors are shown. */
export function field(label, input, opts = {}) {
  const id = input.id || (input.id = "f" + (++uid));
  const isCheck = input.type === "checkbox";
  const wrap = el("div", { class: "field" + (isCheck ? " check" : "") + (opts.wide ? " wide" : ""), data: opts.name ? { field: opts.name } : undefined });
  const lab = el("label", { text: label, attrs: { for: id } });
  if (isCheck) wrap.append(input, lab);
  else wrap.append(lab, input);
  if (opts.help) wrap.appendChild(el("div", { class: "help", text: opts.help }));
  if (!isAdmin() && !opts.always) input.disabled = true;
  return wrap;
}

export function textInput(value, attrs = {}) {
  return el("input", { type: attrs.type || "text", value: value === null || value === undefined ? "" : String(value), attrs: { autocomplete: "off", spellcheck: "false", ...attrs } });
}

export function numInput(value, attrs = {}) {
  return el("input", { type: "number", value: value === null || value === undefined ? "" : String(value), attrs: { step: "any", ...attrs } });
}

export function select(options, value) {
  const s = el("select");
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    s.appendChild(el("option", { value: v, text: label, selected: String(v) === String(value) }));
  }
  if (value !== undefined && value !== null && ![...s.options].some((o) => o.value === String(value))) {
    s.appendChild(el("option", { value: String(value), text: String(value), selected: true }));
  }
  return s;
}

export function checkbox(value) {
  return el("input", { type: "checkbox", checked: !!value });
}

export function numOrNull(input) {
  const v = input.value.trim();
  return v === "" ? null : Number(v);
}

export function lines(text) {
  return text.split("\n").map((s) => s.trim()).filter((s) => s !== "");
}

export function clearErrors(container) {
  for (const e of container.querySelectorAll(".field.invalid")) e.classList.remove("invalid");
  for (const e of container.querySelectorAll(".err")) e.remove();
}

/**
 * Shows an API error inside `container`: each `fields[]` entry next to the field whose data-field
 * names it (exactly, or as a dotted suffix: `modbus.devices[2].unit_id` matches `unit_id`), the rest
 * in a banner at `bannerSlot`.
 */
export function showError(container, err, bannerSlot) {
  clearErrors(container);
  const leftovers = [];
  const cands = [...container.querySelectorAll("[data-field]")];
  for (const f of err.fields || []) {
    const name = String(f.field || "");
    let best = null;
    for (const c of cands) {
      const n = c.dataset.field;
      if (n === name || name.endsWith("." + n) || name.endsWith("]." + n) || name.endsWith(n) && /[.\]]$/.test(name.slice(0, name.length - n.length))) {
        if (!best || n.length > best.dataset.field.length) best = c;
      }
    }
    if (!best) best = cands.find((c) => c.dataset.field.startsWith(name + ".") || c.dataset.field.startsWith(name + "["));
    if (best) {
      best.classList.add("invalid");
      best.appendChild(el("div", { class: "err", text: f.message, attrs: { role: "alert" } }));
    } else {
      leftovers.push((name ? name + ": " : "") + f.message);
    }
  }
  if (bannerSlot) {
    const msg = err.status === 422 && err.fields.length ? "Please correct the highlighted fields." : (err.message || "Request failed.");
    const list = leftovers.length ? el("ul", null, leftovers.map((t) => el("li", { text: t }))) : null;
    clear(bannerSlot, banner("bad", msg, list));
    const first = container.querySelector(".field.invalid");
    (first || bannerSlot).scrollIntoView({ block: "center", behavior: "smooth" });
  } else if (leftovers.length || !(err.fields || []).length) {
    toast(err.message || "Request failed.", "bad");
  }
}

/** The banner after a config save: saved / applied / restart required. */
export function savedBanner(res) {
  if (res && res.restart_required) {
    const btn = isAdmin() ? el("button", { type: "button", class: "small", text: "Restart now", on: { click: restartFlow } }) : null;
    return banner("warn", "Saved. Restart required: " + (res.message || "this change takes effect after a restart.") + " ", btn);
  }
  return banner("ok", "Saved and applied." + (res && res.message ? " " + res.message : ""));
}

export async function restartFlow() {
  if (!(await confirmDialog("Restart the gateway?", "Ironbridge restarts its services. Buffered data is kept; MQTT clients reconnect and the uplink resumes from where it was.", "Restart", true))) return;
  try {
    await api("POST", "/api/system/restart", {});
    toast("Restart requested. The page reloads when the gateway is back.");
    const t0 = Date.now();
    const wait = async () => {
      try { await api("GET", "/healthz", undefined, { allow401: true }); if (Date.now() - t0 > 3000) { location.reload(); return; } } catch { /* still down */ }
      if (Date.now() - t0 < 120000) setTimeout(wait, 1000);
    };
    setTimeout(wait, 1500);
  } catch (e) { toast(e.message, "bad"); }
}

/**
 * A config section as a form card: loads `GET /api/config/{section}`, `build(cfg)` returns
 * `{ node, collect() }`; Save sends `PUT /api/config/{section}` with `collect()`.
 */
export async function sectionForm(parent, section, title, build, opts = {}) {
  const card = el("section", { class: "card" }, el("h2", { text: title }));
  parent.appendChild(card);
  const slot = el("div");
  const body = el("div", { class: "muted", text: "Loading…" });
  card.append(slot, body);
  let cfg;
  try {
    cfg = await api("GET", "/api/config/" + section);
  } catch (e) {
    if (opts.onMissing && e.status === 404) { opts.onMissing(card, body); return null; }
    clear(body, banner("bad", "Could not load the configuration: " + e.message));
    return null;
  }
  const built = build(cfg);
  const form = el("form", { attrs: { novalidate: true } }, built.node);
  clear(body, form);
  if (isAdmin()) {
    const save = el("button", { type: "submit", class: "primary", text: "Save" });
    const extra = built.actions || [];
    form.appendChild(el("div", { class: "form-actions" }, save, extra));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      clear(slot);
      let value;
      try { value = built.collect(); } catch (e) { clear(slot, banner("bad", e.message)); return; }
      save.disabled = true;
      try {
        const res = await api("PUT", "/api/config/" + section, value);
        clear(slot, savedBanner(res));
        if (opts.onSaved) opts.onSaved(res);
      } catch (e) {
        showError(form, e, slot);
      } finally { save.disabled = false; }
    });
  } else {
    form.appendChild(el("p", { class: "muted small", text: "Read-only: your account has the " + session.role + " role." }));
  }
  return { card, form, cfg, slot };
}

// ---------- polling ----------

/** Calls `fn` now and every `ms` while the tab is visible; errors are shown by `fn` itself. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) { try { await fn(); } catch { /* shown by fn */ } }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden && timer) { clearTimeout(timer); tick(); } });
  tick();
  return () => { stopped = true; if (timer) clearTimeout(timer); };
}

// ---------- layout ----------

function layout(path, gatewayId) {
  const nav = el("ul", { class: "nav" });
  for (const [href, label] of NAV) {
    nav.appendChild(el("li", null, el("a", { href, text: label, attrs: { "aria-current": href === path ? "page" : null } })));
  }
  const logout = el("button", { type: "button", class: "small", text: "Sign out", on: { click: async () => {
    try { await api("POST", "/api/logout", {}); } catch { /* session gone anyway */ }
    location.replace("/login");
  } } });
  const side = el("nav", { class: "side", id: "side", attrs: { "aria-label": "Main" } },
    el("div", { class: "brand" }, el("img", { src: "/assets/logo.svg", alt: "" }), "Ironbridge"),
    el("div", { class: "gwid", text: gatewayId ? "Gateway " + gatewayId : "Edge gateway" }),
    nav,
    el("div", { class: "side-foot" },
      el("div", null, "Signed in as ", el("span", { class: "who", text: session.user })),
      el("div", { class: "muted small", text: "Role: " + session.role }),
      logout));
  const menu = el("button", { type: "button", class: "small", text: "Menu", attrs: { "aria-controls": "side", "aria-expanded": "false" } });
  menu.addEventListener("click", () => {
    const open = side.classList.toggle("open");
    menu.setAttribute("aria-expanded", String(open));
  });
  const top = el("header", { class: "topbar" },
    el("div", { class: "brand" }, el("img", { src: "/assets/logo.svg", alt: "" }), "Ironbridge"), menu);
  const main = el("main", { class: "main", id: "main" });
  const root = el("div", { class: "layout" }, side, el("div", null, top, main));
  return { root, main };
}

export function pageHead(title, sub, ...right) {
  return el("div", { class: "page-head" },
    el("div", null, el("h1", { text: title }), sub ? el("div", { class: "sub", text: sub }) : null),
    right.length ? el("div", { class: "row" }, right) : null);
}

const PAGE_MODULES = {
  "/setup": "setup", "/login": "login", "/dashboard": "dashboard", "/devices": "devices", "/mqtt": "mqtt",
  "/sparkplug": "sparkplug", "/uplink": "uplink", "/buffer": "buffer", "/system": "system",
  "/audit": "audit",
};

async function boot() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const app = document.getElementById("app");
  let s;
  try {
    s = await api("GET", "/api/session", undefined, { allow401: true });
  } catch (e) {
    clear(app, el("div", { class: "auth" }, el("div", { class: "auth-box" }, banner("bad", "The gateway's API did not answer: " + e.message))));
    return;
  }
  session.csrf = s.csrf_token || "";
  if (s.setup_required) {
    if (path !== "/setup") { location.replace("/setup"); return; }
  } else if (!s.authenticated) {
    if (path !== "/login") { goLogin(); return; }
  } else if (path === "/" || path === "/login" || path === "/setup") {
    location.replace("/dashboard");
    return;
  }
  const name = PAGE_MODULES[path];
  if (!name) { location.replace("/"); return; }
  const mod = await import("/assets/" + name + ".js");
  if (path === "/setup" || path === "/login") {
    clear(app);
    mod.render(app, s);
    return;
  }
  session.user = s.user || "";
  session.role = s.role || "viewer";
  document.body.classList.add("role-" + (["admin", "operator"].includes(session.role) ? session.role : "viewer"));
  const { root, main } = layout(path, s.gateway_id);
  clear(app, root);
  document.title = (NAV.find(([h]) => h === path) || [, "Ironbridge"])[1] + " · Ironbridge";
  await mod.render(main);
}

boot();

/**
 * Where to go after signing in: `next` only if it is a path on this same origin, else the
 * dashboard. The browser's own URL parser decides (it drops tabs and newlines and reads `\` as
 * `/`, which is what the known bypasses — `/\evil`, `//evil`, `/\t/evil`, `javascript:` —
 * rely on), and the result is rebuilt from the parsed path so nothing else survives.
 */
export function safeNext(next) {
  if (typeof next !== "string" || !next.startsWith("/") || /[\\\u0000-\u001f\u007f]/.test(next)) return "/dashboard";
  let url;
  try { url = new URL(next, location.origin); } catch { return "/dashboard"; }
  if (url.origin !== location.origin || url.pathname.startsWith("//")) return "/dashboard";
  return url.pathname + url.search + url.hash;
}
