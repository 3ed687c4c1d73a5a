// System → Audit: the audit trail (logins, changes, device writes and commands), filtered, with
// CSV and JSON-lines export of the same selection. Admins only.
import { el, api, clear, banner, field, textInput, select, isAdmin, pageHead, fmtTime } from "/assets/app.js";

export async function render(main) {
  main.appendChild(pageHead("Audit trail", "Who did what on this gateway, and what came of it.",
    el("a", { class: "btn", href: "/system", text: "System" })));
  if (!isAdmin()) { main.appendChild(banner("info", "Only administrators can read the audit trail.")); return; }
  const actor = textInput("", { name: "actor", id: "audit-actor" });
  const action = select([["", "any"], ["login", "login"], ["login_failed", "login failed"], ["login_throttled", "login throttled"], ["logout", "logout"],
    ["config_change", "configuration change"], ["user_", "users"], ["token_", "tokens"], ["certificate_change", "certificate"],
    ["restart", "restart"], ["daemon_start", "daemon start"], ["device_write", "device write"], ["command", "command (Sparkplug, Kafka)"]], "");
  action.id = "audit-action";
  const outcome = select([["", "any"], ["ok", "ok"], ["denied", "denied"], ["failed", "failed"]], "");
  outcome.id = "audit-outcome";
  const since = el("input", { type: "datetime-local", id: "audit-since" });
  const text = textInput("", { name: "text", id: "audit-text" });
  const csv = el("a", { class: "btn", text: "Export CSV", id: "audit-csv", attrs: { download: "ironbridge-audit.csv" } });
  const jsonl = el("a", { class: "btn", text: "Export JSON lines", id: "audit-jsonl", attrs: { download: "ironbridge-audit.jsonl" } });
  const slot = el("div");
  const body = el("tbody");
  const form = el("form", { id: "audit-filter" },
    el("div", { class: "fields" },
      field("User or source", actor, { always: true }), field("Action", action, { always: true }),
      field("Outcome", outcome, { always: true }), field("Since", since, { always: true }), field("Text", text, { always: true })),
    el("div", { class: "form-actions" }, el("button", { type: "submit", class: "primary", text: "Filter" }), csv, jsonl));
  main.append(el("section", { class: "card" }, form), slot,
    el("section", { class: "card" }, el("div", { class: "table-wrap" }, el("table", { id: "audit-table" },
      el("thead", null, el("tr", null, ["Time", "Source", "Who", "Address", "Action", "Target", "Outcome", "Detail"].map((h) => el("th", { text: h })))),
      body))));
  const query = () => {
    const q = new URLSearchParams();
    if (actor.value.trim()) q.set("actor", actor.value.trim());
    if (action.value) q.set("action", action.value);
    if (outcome.value) q.set("outcome", outcome.value);
    if (since.value) { const t = new Date(since.value).getTime(); if (!Number.isNaN(t)) q.set("since_ms", String(t)); }
    if (text.value.trim()) q.set("text", text.value.trim());
    return q;
  };
  const load = async () => {
    const q = query();
    const withFormat = (f) => { const c = new URLSearchParams(q); c.set("format", f); c.set("limit", "10000"); return "/api/audit?" + c; };
    csv.href = withFormat("csv");
    jsonl.href = withFormat("jsonl");
    let r;
    try { r = await api("GET", "/api/audit?" + q); } catch (e) { clear(slot, banner("bad", "Cannot load the audit trail: " + e.message)); return; }
    clear(slot);
    const rows = (r.records || []).slice().reverse();
    if (!rows.length) { clear(body, el("tr", null, el("td", { class: "empty", colSpan: 8, text: "No records match." }))); return; }
    clear(body, rows.map((x) => el("tr", { data: { seq: String(x.seq), action: x.action } },
      el("td", { class: "ts", text: fmtTime(x.time_ms) }), el("td", { text: x.source }), el("td", { class: "mono", text: x.actor }),
      el("td", { class: "mono", text: x.peer || "" }), el("td", { text: x.action }), el("td", { class: "mono", text: x.target || "" }),
      el("td", { text: x.outcome }), el("td", { class: "mono small", text: x.detail ? JSON.stringify(x.detail) : "" }))));
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  load();
}
