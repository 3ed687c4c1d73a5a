// Buffer: size, full policy, fsync policy and current usage.
import { el, api, clear, banner, field, textInput, numInput, select, sectionForm, pageHead, poll, fmtBytes, fmtNum, fmtDuration, pill } from "/assets/app.js";

function sizeText(v) {
  if (typeof v !== "number") return v === null || v === undefined ? "" : String(v);
  for (const [u, m] of [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1 << 10]]) if (v >= m && v % m === 0) return v / m + " " + u;
  return String(v);
}

function sizeValue(s) {
  const t = s.trim();
  return /^\d+$/.test(t) ? Number(t) : t;
}

export async function render(main) {
  main.appendChild(pageHead("Buffer", "The durable disk log every reading is written to before it is forwarded."));
  const usage = el("section", { class: "card", id: "buffer-usage" }, el("h2", { text: "Usage" }), el("div", { class: "muted", text: "Loading…" }));
  main.appendChild(usage);
  poll(async () => {
    let s;
    try { s = await api("GET", "/api/status"); } catch (e) { clear(usage, el("h2", { text: "Usage" }), banner("bad", e.message)); return; }
    const b = s.buffer || {};
    const f = Number(b.fill_ratio || 0);
    const kind = f >= 0.9 ? "bad" : f >= 0.7 ? "warn" : "ok";
    clear(usage, el("h2", null, "Usage", pill(b.failed ? "bad" : kind, b.failed ? "Failed" : kind === "ok" ? "OK" : kind === "warn" ? "High" : "Nearly full")),
      el("div", { class: "big", text: (f * 100).toFixed(1) + " %" }),
      el("div", { class: "meter" + (kind === "ok" ? "" : " " + kind) }, el("span", { class: "w" + Math.min(100, Math.round(f * 20) * 5) })),
      el("dl", { class: "kv" },
        el("dt", { text: "On disk" }), el("dd", { text: fmtBytes(b.bytes) + " of " + fmtBytes(b.max_bytes) }),
        el("dt", { text: "Records" }), el("dd", { text: fmtNum(b.records) + " (offsets " + fmtNum(b.oldest_offset) + " – " + fmtNum(b.next_offset) + ")" }),
        el("dt", { text: "Oldest record" }), el("dd", { text: b.oldest_age_ms != null ? fmtDuration(b.oldest_age_ms) + " old" : "–" }),
        el("dt", { text: "Dropped (full)" }), el("dd", { text: fmtNum(b.dropped_records) }),
        el("dt", { text: "Refused (backpressure)" }), el("dd", { text: fmtNum(b.full_rejections) }),
        el("dt", { text: "Corrupt records skipped" }), el("dd", { text: fmtNum(b.corrupt_records) }),
        b.failed ? [el("dt", { text: "Failure" }), el("dd", { class: "err", text: b.failed })] : null));
  }, 3000);
  await sectionForm(main, "buffer", "Settings", (cfg) => {
    const i = {
      max: textInput(sizeText(cfg.max_bytes), { id: "buffer-max" }),
      seg: textInput(sizeText(cfg.segment_bytes)),
      rec: textInput(sizeText(cfg.max_record_bytes)),
      full: select([["drop_oldest", "Drop oldest records (keep accepting)"], ["backpressure", "Backpressure (refuse new data)"]], cfg.full_policy),
      fsync: select([["always", "Always (every group commit)"], ["interval", "Interval"], ["never", "Never (OS decides)"]], cfg.fsync),
      interval: numInput(cfg.fsync_interval_ms, { min: 1, step: 1 }),
    };
    const node = el("div", null, el("div", { class: "fields" },
      field("Maximum size", i.max, { name: "buffer.max_bytes", help: "Bytes, or e.g. \"1 GiB\", \"512 MiB\"." }),
      field("When full", i.full, { name: "buffer.full_policy" }),
      field("fsync policy", i.fsync, { name: "buffer.fsync", help: "“Always”: a reading is acknowledged only once it is on disk." }),
      field("fsync interval (ms)", i.interval, { name: "buffer.fsync_interval_ms" })),
    el("details", null, el("summary", { text: "Advanced" }), el("div", { class: "fields" },
      field("Segment size", i.seg, { name: "buffer.segment_bytes" }),
      field("Max record size", i.rec, { name: "buffer.max_record_bytes" }),
      field("Directory", textInput(cfg.dir || "(state directory)/buffer", { disabled: true }), { help: "Set in the TOML file." }))));
    return {
      node,
      collect: () => ({ ...cfg, max_bytes: sizeValue(i.max.value), segment_bytes: sizeValue(i.seg.value), max_record_bytes: sizeValue(i.rec.value),
        full_policy: i.full.value, fsync: i.fsync.value, fsync_interval_ms: Number(i.interval.value) }),
    };
  });
}
