// Sparkplug B: the `[sparkplug]` section, rendered generically from whatever fields it has.
import { el, banner, field, textInput, numInput, checkbox, sectionForm, pageHead, clear } from "/assets/app.js";

const LABELS = {
  group_id: "Group id", edge_node_id: "Edge node id", node_id: "Edge node id", primary_host_id: "Primary host id",
  enabled: "Enabled", ingest: "Ingest (third-party edge nodes)", commands: "Commands", allow: "Allowed command targets",
};

function label(key) {
  return LABELS[key] || key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** Builds inputs for a JSON object, recursively; returns { node, collect }. */
function objectForm(obj, path) {
  const parts = [];
  const getters = [];
  const fields = el("div", { class: "fields" });
  const nested = [];
  for (const [k, v] of Object.entries(obj)) {
    const name = path + "." + k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const sub = objectForm(v, name);
      nested.push(el("fieldset", { data: { field: name } }, el("legend", { text: label(k) }), sub.node));
      getters.push((o) => { o[k] = sub.collect(); });
    } else if (typeof v === "boolean") {
      const c = checkbox(v);
      fields.appendChild(field(label(k), c, { name }));
      getters.push((o) => { o[k] = c.checked; });
    } else if (typeof v === "number") {
      const n = numInput(v);
      fields.appendChild(field(label(k), n, { name }));
      getters.push((o) => { o[k] = n.value.trim() === "" ? null : Number(n.value); });
    } else if (Array.isArray(v) && v.every((x) => typeof x === "string")) {
      const t = el("textarea", { value: v.join("\n"), attrs: { rows: Math.max(3, v.length + 1) } });
      fields.appendChild(field(label(k), t, { name, wide: true, help: "One per line." }));
      getters.push((o) => { o[k] = t.value.split("\n").map((s) => s.trim()).filter(Boolean); });
    } else if (typeof v === "string" || v === null) {
      const t = textInput(v === null ? "" : v);
      fields.appendChild(field(label(k), t, { name, help: v === null ? "Optional." : null }));
      getters.push((o) => { const s = t.value.trim(); o[k] = s === "" && v === null ? null : s; });
    } else {
      const t = el("textarea", { value: JSON.stringify(v, null, 2), attrs: { rows: 6 } });
      fields.appendChild(field(label(k) + " (JSON)", t, { name, wide: true }));
      getters.push((o) => {
        try { o[k] = JSON.parse(t.value); } catch (e) { throw new Error(label(k) + ": not valid JSON (" + e.message + ")"); }
      });
    }
  }
  parts.push(fields, ...nested);
  return { node: el("div", null, parts), collect: () => { const o = { ...obj }; for (const g of getters) g(o); return o; } };
}

export async function render(main) {
  main.appendChild(pageHead("Sparkplug B", "Edge node identity, ingest of third-party edge nodes and the command allow-list."));
  await sectionForm(main, "sparkplug", "Sparkplug settings", (cfg) => {
    if (cfg === null || typeof cfg !== "object" || Array.isArray(cfg)) throw new Error("unexpected section shape");
    return objectForm(cfg, "sparkplug");
  }, {
    onMissing: (card, body) => clear(body, banner("info", "Sparkplug is not available in this build: the gateway has no [sparkplug] configuration section.")),
  });
}
