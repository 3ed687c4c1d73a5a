// Devices: list, live values, test read, write (admin, confirmed), add/edit/delete, tag CSV.
import {
  el, api, clear, banner, toast, dialog, confirmDialog, field, textInput, numInput, select, checkbox,
  numOrNull, showError, clearErrors, savedBanner, isAdmin, canOperate, poll, pageHead, fmtAgo, fmtTime, fmtValue, fmtNum,
} from "/assets/app.js";
import { linkPill, qualityPill } from "/assets/common.js";

const enc = encodeURIComponent;
const TYPES = ["bool", "bit", "u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64", "string"];
const AREAS = [["", "from address"], ["holding_register", "holding register"], ["input_register", "input register"], ["coil", "coil"], ["discrete_input", "discrete input"]];
const ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"];

export async function render(main) {
  const q = new URLSearchParams(location.search);
  if (q.has("new")) return editView(main, null);
  if (q.get("edit")) return editView(main, q.get("edit"));
  if (q.get("d")) return detailView(main, q.get("d"));
  return listView(main);
}

// ---------- list ----------

function listView(main) {
  const add = isAdmin() ? el("a", { class: "btn primary", href: "/devices?new=1", text: "Add device", id: "add-device" }) : null;
  main.appendChild(pageHead("Devices", "Modbus TCP and RTU devices polled by this gateway.", add));
  const slot = el("div");
  const body = el("tbody");
  const head = ["Device", "State", "Transport", "Address", "Enabled", "Tags", "Last good poll", ""];
  main.append(slot, el("div", { class: "table-wrap" }, el("table", { id: "device-list" },
    el("thead", null, el("tr", null, head.map((h) => el("th", { text: h })))), body)));
  poll(async () => {
    let list;
    try { list = await api("GET", "/api/devices"); } catch (e) { clear(slot, banner("bad", "Cannot load devices: " + e.message)); return; }
    clear(slot);
    if (!list.length) {
      clear(body, el("tr", null, el("td", { class: "empty", colSpan: head.length },
        "No devices yet. ", isAdmin() ? el("a", { href: "/devices?new=1", text: "Add the first device" }) : "An administrator can add devices.")));
      return;
    }
    clear(body, list.map((d) => {
      const h = d.health || {};
      return el("tr", { data: { device: d.name } },
        el("td", null, el("a", { href: "/devices?d=" + enc(d.name), text: d.name, class: "device-link" })),
        el("td", null, linkPill(d.enabled === false ? "disabled" : h.state)),
        el("td", { text: String(d.transport || "").toUpperCase() }),
        el("td", { class: "mono", text: d.address || "" }),
        el("td", { text: d.enabled === false ? "No" : "Yes" }),
        el("td", { class: "num", text: String((d.tags || []).length) }),
        el("td", { text: fmtAgo(h.last_success_ms) }),
        el("td", null, el("div", { class: "actions" },
          el("a", { class: "btn small", href: "/devices?d=" + enc(d.name), text: "Live values" }),
          isAdmin() ? el("a", { class: "btn small", href: "/devices?edit=" + enc(d.name), text: "Edit", data: { action: "edit" } }) : null)));
    }));
  }, 3000);
}

// ---------- detail: live values ----------

function detailView(main, name) {
  const slot = el("div");
  const head = el("div");
  const health = el("section", { class: "card" }, el("div", { class: "muted", text: "Loading…" }));
  const body = el("tbody");
  const csvInput = el("input", { type: "file", class: "hidden", attrs: { accept: ".csv,text/csv" } });
  const actions = [
    el("a", { class: "btn", href: "/devices", text: "All devices" }),
    el("a", { class: "btn", href: "/api/devices/" + enc(name) + "/tags.csv", text: "Export tags (CSV)", attrs: { download: name + "-tags.csv" } }),
  ];
  if (isAdmin()) {
    actions.push(
      el("button", { type: "button", text: "Import tags (CSV)…", data: { action: "import" }, on: { click: () => csvInput.click() } }),
      el("a", { class: "btn", href: "/devices?edit=" + enc(name), text: "Edit", data: { action: "edit" } }),
      el("button", { type: "button", class: "danger", text: "Delete", data: { action: "delete" }, on: { click: () => deleteDevice(name) } }));
  }
  csvInput.addEventListener("change", () => importCsv(name, csvInput, slot));
  main.append(head, slot, csvInput, health,
    el("section", { class: "card" }, el("h2", { text: "Live values" }),
      el("div", { class: "table-wrap" }, el("table", { id: "tag-table" },
        el("thead", null, el("tr", null, ["Tag", "Value", "Unit", "Quality", "Timestamp", "Type", "Access", ""].map((h, i) => el("th", { class: i === 1 ? "num" : "", text: h })))),
        body))));
  clear(head, pageHead(name, "Loading…", actions));
  let tagsKey = "";
  const rows = new Map();
  poll(async () => {
    let d;
    try { d = await api("GET", "/api/devices/" + enc(name)); } catch (e) {
      clear(slot, banner("bad", e.status === 404 ? "There is no device named “" + name + "”." : "Cannot load the device: " + e.message));
      return;
    }
    if (slot.firstChild && slot.firstChild.classList.contains("bad")) clear(slot);
    const h = d.health || {};
    clear(head, pageHead(d.name, String(d.transport || "").toUpperCase() + " " + (d.address || "") + (h.unit_id !== undefined ? " · unit " + h.unit_id : ""), actions));
    clear(health, el("h2", null, "Health", linkPill(d.enabled === false ? "disabled" : h.state)),
      el("dl", { class: "kv" },
        el("dt", { text: "Last good poll" }), el("dd", { text: fmtAgo(h.last_success_ms) }),
        el("dt", { text: "Last error" }), el("dd", { text: h.last_error ? h.last_error + " (" + fmtAgo(h.last_error_ms) + ")" : "none" }),
        el("dt", { text: "Polls (failed)" }), el("dd", { text: fmtNum(h.polls) + " (" + fmtNum(h.failed_polls) + ")" }),
        el("dt", { text: "Timeouts / exceptions" }), el("dd", { text: fmtNum(h.timeouts) + " / " + fmtNum(h.exceptions) }),
        el("dt", { text: "Round trip (avg)" }), el("dd", { text: h.rtt_avg_us ? (h.rtt_avg_us / 1000).toFixed(1) + " ms" : "–" })));
    const tags = d.tags || [];
    const key = tags.map((t) => t.name + "/" + t.writable).join("|");
    if (key !== tagsKey) {
      tagsKey = key;
      rows.clear();
      if (!tags.length) {
        clear(body, el("tr", null, el("td", { class: "empty", colSpan: 8, text: "This device has no tags." })));
      } else {
        clear(body, tags.map((t) => {
          const cells = { value: el("td", { class: "num mono value" }), quality: el("td", { class: "quality" }), ts: el("td", { class: "ts" }) };
          rows.set(t.name, cells);
          const act = el("div", { class: "actions" });
          if (canOperate()) {
            act.appendChild(el("button", { type: "button", class: "small", text: "Test read", data: { action: "read", tag: t.name }, on: { click: () => testRead(d.name, t) } }));
            if (t.writable) act.appendChild(el("button", { type: "button", class: "small", text: "Write…", data: { action: "write", tag: t.name }, on: { click: () => writeTag(d.name, t) } }));
          }
          return el("tr", { data: { tag: t.name } },
            el("td", { class: "mono", text: t.name }), cells.value, el("td", { text: t.unit || "" }), cells.quality, cells.ts,
            el("td", { class: "mono", text: t.data_type || "" }), el("td", { text: t.writable ? "read/write" : "read only" }),
            el("td", null, act));
        }));
      }
    }
    for (const t of tags) {
      const c = rows.get(t.name);
      if (!c) continue;
      c.value.textContent = fmtValue(t.value);
      clear(c.quality, qualityPill(t.quality, t.reason));
      c.ts.textContent = fmtTime(t.ts);
    }
  }, 1000);
}

async function testRead(device, tag) {
  let body;
  try {
    const r = await api("POST", "/api/devices/" + enc(device) + "/read", { tag: tag.name });
    body = [
      el("p", null, "Value: ", el("strong", { class: "mono", id: "read-value", text: fmtValue(r.value) + (tag.unit ? " " + tag.unit : "") })),
      el("p", null, "Quality: ", qualityPill(r.quality, r.reason)),
      el("p", { text: "Read at " + fmtTime(r.ts || Date.now()) }),
      r.raw ? el("p", { class: "mono small", text: "Raw registers: [" + r.raw.join(", ") + "]" }) : null,
    ];
  } catch (e) {
    body = [banner("bad", "The read failed: " + e.message)];
  }
  await dialog("Test read: " + tag.name, body, [{ label: "Close", value: true, class: "primary" }]);
}

function parseValue(tag, text) {
  const t = text.trim();
  const dt = tag.data_type || "";
  if (dt === "bool" || dt === "bit") {
    if (/^(true|1|on)$/i.test(t)) return true;
    if (/^(false|0|off)$/i.test(t)) return false;
    throw new Error("Enter true or false.");
  }
  if (dt === "string") return text;
  if (t === "" || Number.isNaN(Number(t))) throw new Error("Enter a number.");
  return Number(t);
}

async function writeTag(device, tag) {
  const isBool = tag.data_type === "bool" || tag.data_type === "bit";
  const input = isBool ? select([["true", "true (on)"], ["false", "false (off)"]], "true") : textInput("", { id: "write-value" });
  input.id = "write-value";
  const err = el("div", { class: "err" });
  const wrap = el("div", { class: "field" }, el("label", { text: "New value" + (tag.unit ? " (" + tag.unit + ")" : ""), attrs: { for: "write-value" } }), input, err);
  for (;;) {
    const go = await dialog("Write to " + tag.name, [el("p", { text: "Current value: " + fmtValue(tag.value) + (tag.unit ? " " + tag.unit : "") }), wrap],
      [{ label: "Cancel", value: false }, { label: "Continue", value: true, class: "primary" }]);
    if (!go) return;
    let value;
    try { value = parseValue(tag, input.value); } catch (e) { err.textContent = e.message; continue; }
    const ok = await confirmDialog("Confirm write", [
      el("p", null, "Write ", el("strong", { class: "mono", text: fmtValue(value) + (tag.unit ? " " + tag.unit : "") }), " to ", el("strong", { class: "mono", text: device + " / " + tag.name }), "?"),
      el("p", { class: "muted", text: "The value is sent to the device immediately. Make sure the machine is in a safe state." }),
    ], "Write value", true);
    if (!ok) return;
    try {
      const r = await api("POST", "/api/devices/" + enc(device) + "/write", { tag: tag.name, value });
      toast("Written" + (r && r.verified ? " and verified by reading back." : "."), "ok");
    } catch (e) {
      toast("Write failed: " + e.message, "bad");
    }
    return;
  }
}

async function deleteDevice(name) {
  if (!(await confirmDialog("Delete device?", "Delete “" + name + "” and its tag map from the configuration? Polling stops; data already buffered is kept.", "Delete device", true))) return;
  try {
    await api("DELETE", "/api/devices/" + enc(name));
    location.replace("/devices");
  } catch (e) { toast("Delete failed: " + e.message, "bad"); }
}

async function importCsv(name, input, slot) {
  const file = input.files && input.files[0];
  input.value = "";
  if (!file) return;
  if (file.size > 256 * 1024) { clear(slot, banner("bad", "The file is larger than 256 KiB.")); return; }
  const text = await file.text();
  const rows = text.split(/\r?\n/).filter((l) => l.trim() !== "").length - 1;
  if (!(await confirmDialog("Import tags?", "Replace the tag map of “" + name + "” with the " + rows + " rows of " + file.name + "?", "Import"))) return;
  try {
    const res = await api("PUT", "/api/devices/" + enc(name) + "/tags.csv", { text, type: "text/csv" });
    clear(slot, savedBanner(res));
  } catch (e) {
    const list = e.fields.length ? el("ul", null, e.fields.map((f) => el("li", { text: (f.line ? "line " + f.line + ": " : "") + (f.field ? f.field + ": " : "") + f.message }))) : null;
    clear(slot, banner("bad", "Import failed: " + e.message, list));
  }
}

// ---------- add / edit ----------

const DEFAULTS = {
  name: "", enabled: true, transport: { type: "tcp", address: "" }, unit_id: 1, timeout_ms: 1000, retries: 1,
  poll_interval_ms: 1000, groups: [], heartbeat_ms: 60000, max_gap_registers: 10, max_gap_bits: 64,
  max_registers_per_read: 125, max_bits_per_read: 2000, tags: [],
};

async function editView(main, name) {
  main.appendChild(pageHead(name ? "Edit device" : "Add device", name ? name : "A Modbus TCP or RTU device and its tag map.",
    el("a", { class: "btn", href: name ? "/devices?d=" + enc(name) : "/devices", text: "Cancel" })));
  const slot = el("div");
  main.appendChild(slot);
  if (!isAdmin()) { main.appendChild(banner("info", "Only administrators can change devices.")); return; }
  let dev = structuredClone(DEFAULTS);
  if (name) {
    try {
      const cfg = await api("GET", "/api/config/modbus");
      const found = (cfg.devices || []).find((d) => d.name === name);
      if (!found) { clear(slot, banner("bad", "There is no device named “" + name + "”.")); return; }
      dev = { ...structuredClone(DEFAULTS), ...found };
    } catch (e) { clear(slot, banner("bad", "Cannot load the configuration: " + e.message)); return; }
  }
  const f = deviceForm(dev);
  const save = el("button", { type: "submit", class: "primary", text: name ? "Save device" : "Add device", id: "save-device" });
  const form = el("form", { id: "device-form", attrs: { novalidate: true } }, f.node,
    el("div", { class: "form-actions" }, save, el("a", { class: "btn", href: name ? "/devices?d=" + enc(name) : "/devices", text: "Cancel" })));
  main.appendChild(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    clear(slot);
    let value;
    try { value = f.collect(); } catch (e) { showError(form, e, slot); return; }
    save.disabled = true;
    try {
      const res = name ? await api("PUT", "/api/devices/" + enc(name), value) : await api("POST", "/api/devices", value);
      if (res && res.restart_required) { clear(slot, savedBanner(res)); return; }
      location.replace("/devices?d=" + enc(value.name));
    } catch (e) {
      showError(form, e, slot);
    } finally { save.disabled = false; }
  });
}

function deviceForm(dev) {
  const tr = dev.transport || { type: "tcp" };
  const i = {
    name: textInput(dev.name, { id: "dev-name", maxlength: 64 }),
    enabled: checkbox(dev.enabled !== false),
    type: select([["tcp", "Modbus TCP"], ["rtu", "Modbus RTU (serial)"]], tr.type),
    address: textInput(tr.address || "", { id: "dev-address", placeholder: "10.0.0.5:502" }),
    path: textInput(tr.path || "", { placeholder: "/dev/ttyUSB0" }),
    baud: select(["1200", "2400", "4800", "9600", "19200", "38400", "57600", "115200"], String(tr.baud || 9600)),
    parity: select([["none", "None"], ["even", "Even"], ["odd", "Odd"]], tr.parity || "none"),
    data_bits: select(["7", "8"], String(tr.data_bits || 8)),
    stop_bits: select(["1", "2"], String(tr.stop_bits || 1)),
    unit_id: numInput(dev.unit_id, { id: "dev-unit", min: 0, max: 255, step: 1 }),
    poll: numInput(dev.poll_interval_ms, { min: 1, step: 1 }),
    timeout: numInput(dev.timeout_ms, { min: 1, step: 1 }),
    retries: numInput(dev.retries, { min: 0, step: 1 }),
    heartbeat: numInput(dev.heartbeat_ms, { min: 0, step: 1 }),
    groups: el("textarea", { value: (dev.groups || []).map((g) => g.name + " = " + g.interval_ms).join("\n"), attrs: { placeholder: "fast = 200", rows: 3 } }),
    gapR: numInput(dev.max_gap_registers, { min: 0, step: 1 }),
    gapB: numInput(dev.max_gap_bits, { min: 0, step: 1 }),
    maxR: numInput(dev.max_registers_per_read, { min: 1, max: 125, step: 1 }),
    maxB: numInput(dev.max_bits_per_read, { min: 1, max: 2000, step: 1 }),
  };
  const tcpFields = el("div", { class: "fields" }, field("Address (host:port)", i.address, { name: "transport.address", help: "Port defaults to 502." }));
  const rtuFields = el("div", { class: "fields" },
    field("Serial port", i.path, { name: "transport.path" }), field("Baud rate", i.baud, { name: "transport.baud" }),
    field("Parity", i.parity, { name: "transport.parity" }), field("Data bits", i.data_bits, { name: "transport.data_bits" }),
    field("Stop bits", i.stop_bits, { name: "transport.stop_bits" }));
  const showTransport = () => { tcpFields.classList.toggle("hidden", i.type.value !== "tcp"); rtuFields.classList.toggle("hidden", i.type.value !== "rtu"); };
  i.type.addEventListener("change", showTransport);
  showTransport();

  const tagBody = el("tbody");
  const tagRows = [];
  const addRow = (t) => {
    const r = tagRow(t, () => { tagRows.splice(tagRows.indexOf(r), 1); r.tr.remove(); renumber(); });
    tagRows.push(r);
    tagBody.appendChild(r.tr);
    renumber();
    return r;
  };
  const renumber = () => tagRows.forEach((r, n) => r.number(n));
  for (const t of dev.tags || []) addRow(t);
  const addTag = el("button", { type: "button", text: "Add tag", id: "add-tag", on: { click: () => addRow({}).focus() } });

  const node = el("div", null,
    el("section", { class: "card" }, el("h2", { text: "Device" }),
      el("div", { class: "fields" },
        field("Name", i.name, { name: "name", help: "Becomes an MQTT topic level: no '/', '+' or '#'." }),
        field("Transport", i.type, { name: "transport.type" }),
        field("Unit id", i.unit_id, { name: "unit_id", help: "TCP 0–255, RTU 1–247." }),
        field("Enabled", i.enabled, { name: "enabled" })),
      tcpFields, rtuFields),
    el("section", { class: "card" }, el("h2", { text: "Polling" }),
      el("div", { class: "fields" },
        field("Poll interval (ms)", i.poll, { name: "poll_interval_ms", help: "Interval of the group “default”." }),
        field("Timeout (ms)", i.timeout, { name: "timeout_ms" }),
        field("Retries", i.retries, { name: "retries" }),
        field("Heartbeat (ms)", i.heartbeat, { name: "heartbeat_ms", help: "Re-send unchanged values this often; 0 = only changes." }),
        field("Poll groups", i.groups, { name: "groups", help: "One per line: name = interval_ms." })),
      el("details", null, el("summary", { text: "Request coalescing (advanced)" }),
        el("div", { class: "fields" },
          field("Max gap (registers)", i.gapR, { name: "max_gap_registers" }),
          field("Max gap (bits)", i.gapB, { name: "max_gap_bits" }),
          field("Max registers per read", i.maxR, { name: "max_registers_per_read" }),
          field("Max bits per read", i.maxB, { name: "max_bits_per_read" })))),
    el("section", { class: "card" }, el("h2", null, "Tags", addTag),
      el("p", { class: "muted small", text: "Addresses: Modicon notation (\"40001\" = holding register 0, \"30001\" input register, \"00001\" coil, \"10001\" discrete input) or a 0-based number with an area." }),
      el("div", { class: "table-wrap", data: { field: "tags" } }, el("table", { id: "tag-editor" },
        el("thead", null, el("tr", null, ["#", "Name", "Address", "Area", "Type", "Order", "Bit", "Length", "Scale", "Offset", "Unit", "Deadband", "Group", "Access", "Verify", ""].map((h) => el("th", { text: h })))),
        tagBody))));

  const int = (inp, label) => {
    const v = numOrNull(inp);
    if (v === null || !Number.isInteger(v)) throw fieldErr(inp, label + " must be a whole number.");
    return v;
  };
  const collect = () => {
    const out = { ...dev };
    out.name = i.name.value.trim();
    out.enabled = i.enabled.checked;
    out.transport = i.type.value === "tcp"
      ? { type: "tcp", address: i.address.value.trim() }
      : { type: "rtu", path: i.path.value.trim(), baud: Number(i.baud.value), parity: i.parity.value, data_bits: Number(i.data_bits.value), stop_bits: Number(i.stop_bits.value) };
    out.unit_id = int(i.unit_id, "Unit id");
    out.poll_interval_ms = int(i.poll, "Poll interval");
    out.timeout_ms = int(i.timeout, "Timeout");
    out.retries = int(i.retries, "Retries");
    out.heartbeat_ms = int(i.heartbeat, "Heartbeat");
    out.max_gap_registers = int(i.gapR, "Max gap");
    out.max_gap_bits = int(i.gapB, "Max gap");
    out.max_registers_per_read = int(i.maxR, "Max registers");
    out.max_bits_per_read = int(i.maxB, "Max bits");
    out.groups = i.groups.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
      const m = l.match(/^([^=\s]+)\s*[=:]\s*(\d+)$/);
      if (!m) throw fieldErr(i.groups, "“" + l + "”: write name = interval_ms.");
      return { name: m[1], interval_ms: Number(m[2]) };
    });
    out.tags = tagRows.map((r) => r.collect());
    return out;
  };
  return { node, collect };
}

/** An error for one input, shaped like an API error so showError places it. */
function fieldErr(input, message) {
  const f = input.closest("[data-field]");
  return { status: 422, message: "", fields: [{ field: f ? f.dataset.field : "", message }] };
}

function tagRow(t, remove) {
  const i = {
    name: textInput(t.name || "", { maxlength: 64 }),
    address: textInput(t.address === undefined || t.address === null ? "" : String(t.address), { placeholder: "40001" }),
    area: select(AREAS, t.area || ""),
    type: select(TYPES, t.type || "u16"),
    order: select(ORDERS, t.order || "ABCD"),
    bit: numInput(t.bit, { min: 0, max: 15, step: 1, class: "narrow" }),
    length: numInput(t.length, { min: 1, step: 1, class: "narrow" }),
    scale: numInput(t.scale === undefined ? 1 : t.scale, { class: "narrow" }),
    offset: numInput(t.offset === undefined ? 0 : t.offset, { class: "narrow" }),
    unit: textInput(t.unit || "", { class: "narrow" }),
    deadband: textInput(t.deadband === undefined || t.deadband === null ? "" : typeof t.deadband === "object" ? JSON.stringify(t.deadband) : String(t.deadband), { placeholder: "0.5 or 2%", class: "narrow" }),
    group: textInput(t.group || "", { placeholder: "default", class: "narrow" }),
    access: select([["read_only", "read only"], ["read_write", "read/write"]], t.access || "read_only"),
    verify: checkbox(!!t.verify_write),
  };
  i.verify.setAttribute("aria-label", "Verify writes by reading back");
  const idx = el("td", { class: "muted" });
  const cells = {};
  const cell = (key, input, label) => {
    input.setAttribute("aria-label", label);
    const td = el("td", null, input);
    cells[key] = td;
    return td;
  };
  const rm = el("button", { type: "button", class: "small danger", text: "Remove", on: { click: remove } });
  const tr = el("tr", { class: "tag-row" }, idx,
    cell("name", i.name, "Tag name"), cell("address", i.address, "Address"), cell("area", i.area, "Area"),
    cell("type", i.type, "Data type"), cell("order", i.order, "Byte order"), cell("bit", i.bit, "Bit"),
    cell("length", i.length, "String length (bytes)"), cell("scale", i.scale, "Scale"), cell("offset", i.offset, "Offset"),
    cell("unit", i.unit, "Unit"), cell("deadband", i.deadband, "Deadband"), cell("group", i.group, "Poll group"),
    cell("access", i.access, "Access"), cell("verify_write", i.verify, "Verify write"), el("td", null, rm));
  const number = (n) => {
    idx.textContent = String(n + 1);
    for (const [k, td] of Object.entries(cells)) td.dataset.field = `tags[${n}].${k === "type" ? "type" : k}`;
  };
  const collect = () => {
    const out = { ...t };
    for (const k of ["data_type"]) delete out[k];
    out.name = i.name.value.trim();
    out.address = i.address.value.trim();
    out.type = i.type.value;
    out.order = i.order.value;
    out.access = i.access.value;
    out.verify_write = i.verify.checked;
    out.unit = i.unit.value.trim();
    const opt = (k, v) => { if (v === null || v === "") delete out[k]; else out[k] = v; };
    opt("area", i.area.value);
    opt("group", i.group.value.trim());
    opt("bit", numOrNull(i.bit));
    opt("length", numOrNull(i.length));
    const sc = numOrNull(i.scale); out.scale = sc === null ? 1 : sc;
    const of = numOrNull(i.offset); out.offset = of === null ? 0 : of;
    const db = i.deadband.value.trim();
    opt("deadband", db === "" ? null : (Number.isNaN(Number(db)) ? db : Number(db)));
    return out;
  };
  return { tr, number, collect, focus: () => i.name.focus() };
}
