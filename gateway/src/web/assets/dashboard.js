// Dashboard: uplink, backlog, rates (live chart), counters, device health.
import { el, api, clear, fmtNum, fmtBytes, fmtDuration, fmtAgo, pill, banner, poll, pageHead } from "/assets/app.js";
import { uplinkPill, linkPill } from "/assets/common.js";
import { RateChart } from "/assets/chart.js";

function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of pairs) dl.append(el("dt", { text: k }), el("dd", null, v));
  return dl;
}

// The age of the oldest record not yet acknowledged by Kafka. The uplink tracks it while it runs;
// without one (no Kafka configured) nothing was ever sent, so it is the oldest record held.
function oldestUnsent(u, b) {
  if (u.lag_oldest_age_ms != null) return fmtDuration(u.lag_oldest_age_ms);
  if (u.lag_records > 0 && b.oldest_age_ms != null) return fmtDuration(b.oldest_age_ms);
  return "–";
}

function meterClass(f) { return f >= 0.9 ? "meter bad" : f >= 0.7 ? "meter warn" : "meter"; }
function widthClass(f) { return "w" + Math.min(100, Math.max(0, Math.round(f * 20) * 5)); }

export async function render(main) {
  const updated = el("span", { class: "muted small", text: "" });
  main.appendChild(pageHead("Dashboard", "Live state of the data path; refreshes every 2 s.", updated));
  const problems = el("div");
  const uplink = el("section", { class: "card", id: "card-uplink" });
  const backlog = el("section", { class: "card", id: "card-backlog" });
  const rates = el("section", { class: "card", id: "card-rates" });
  const counters = el("section", { class: "card", id: "card-counters" });
  const chart = new RateChart(90, 2);
  const rateNow = el("div");
  clear(rates, el("h2", { text: "Throughput" }), rateNow, chart.scale, chart.root,
    el("div", { class: "legend" }, el("span", { text: "Ingest (records/s)" }), el("span", { class: "out", text: "Forwarded to Kafka (records/s)" })));
  const devices = el("section", { class: "card", id: "card-devices" });
  main.append(problems, el("div", { class: "grid" }, uplink, backlog, counters), rates, devices);

  const update = async () => {
    let s;
    try {
      s = await api("GET", "/api/status");
    } catch (e) {
      clear(problems, banner("bad", "Cannot read the gateway status: " + e.message));
      return;
    }
    const gw = document.querySelector(".gwid");
    if (gw && s.gateway_id) gw.textContent = "Gateway " + s.gateway_id;
    updated.textContent = "Updated " + new Date().toLocaleTimeString("en-GB");
    clear(problems, s.problems && s.problems.length
      ? banner(s.healthy ? "warn" : "bad", s.healthy ? "Attention:" : "The gateway needs attention:", el("ul", null, s.problems.map((p) => el("li", { text: p }))))
      : null);

    const u = s.uplink || {};
    clear(uplink,
      el("h2", null, "Kafka uplink", uplinkPill(u.state)),
      kv([
        ["Since", fmtAgo(u.state_since_ms)],
        ["Forwarded", fmtNum(u.forwarded_records) + " records (" + fmtBytes(u.forwarded_bytes) + ")"],
        ["Retries", fmtNum(u.retries)],
        // Exactly-once bookkeeping: the idempotent producer's identity, resends the broker
        // recognised, records skipped after a restart because Kafka had them, and resends
        // nothing could prove (at-least-once: possible duplicates).
        ["Producer id / epoch", u.producer_id >= 0 ? u.producer_id + " / " + u.producer_epoch : "–"],
        ["Duplicates suppressed", fmtNum(u.duplicates_suppressed)],
        ["Skipped on resume", fmtNum(u.resume_skipped)],
        ["Unproven resends", u.unproven_resends > 0 ? el("span", { class: "err", text: fmtNum(u.unproven_resends) }) : "0"],
        ["Last error", u.last_error ? u.last_error.message + " (" + fmtAgo(u.last_error.at_ms) + ")" : "none"],
      ]),
      u.reason ? el("div", { class: "reason", id: "uplink-reason" }, el("strong", { text: "Reason: " }), u.reason,
        u.retry_in_ms ? " — next try in " + fmtDuration(u.retry_in_ms) : "") : null);

    const b = s.buffer || {};
    const fill = Number(b.fill_ratio || 0);
    const fillKind = fill >= 0.9 ? "bad" : fill >= 0.7 ? "warn" : "ok";
    clear(backlog,
      el("h2", null, "Backlog", pill(u.lag_records > 0 ? (u.state === "connected" ? "ok" : "warn") : "ok", u.lag_records > 0 ? (u.state === "connected" ? "Draining" : "Buffering") : "Empty")),
      el("div", { class: "big", id: "backlog-records", text: fmtNum(u.lag_records) }),
      el("div", { class: "muted", text: "records not yet in Kafka" }),
      el("div", { class: meterClass(fill), attrs: { role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": (fill * 100).toFixed(1), "aria-label": "Buffer fill" } },
        el("span", { class: widthClass(fill) })),
      kv([
        ["Buffer fill", el("span", null, (fill * 100).toFixed(1) + " % of " + fmtBytes(b.max_bytes) + " ", pill(fillKind, fillKind === "ok" ? "OK" : fillKind === "warn" ? "High" : "Nearly full"))],
        ["On disk", fmtBytes(b.bytes) + " in " + fmtNum(b.records) + " records"],
        // Without an uplink nothing was ever sent: the oldest unsent record is the oldest held.
        ["Oldest unsent", oldestUnsent(u, b)],
        ["Oldest held", b.oldest_age_ms != null ? fmtDuration(b.oldest_age_ms) : "–"],
      ]));

    const m = s.mqtt || {};
    const warnIf = (n) => (n > 0 ? el("span", { class: "err", text: fmtNum(n) }) : "0");
    clear(counters,
      el("h2", { text: "Losses and errors" }),
      kv([
        ["Dropped (buffer full)", warnIf(b.dropped_records)],
        ["Corrupt records", warnIf(b.corrupt_records)],
        ["Refused (backpressure)", warnIf(b.full_rejections)],
        ["Disk full errors", warnIf(b.disk_full_errors)],
        ["Dead-lettered", warnIf(u.dead_lettered)],
        ["Unmatched, dropped", fmtNum(u.dropped_unmatched)],
        ["MQTT clients", fmtNum(m.connections)],
        ["MQTT auth failures", fmtNum(m.auth_failures)],
      ]));

    const r = s.rates || {};
    chart.push(r.ingest_per_s || 0, r.forward_per_s || 0);
    clear(rateNow, el("div", { class: "row" },
      el("span", null, el("span", { class: "big", id: "rate-in", text: fmtNum(r.ingest_per_s, 1) }), el("span", { class: "muted", text: " in/s   " })),
      el("span", null, el("span", { class: "big", id: "rate-out", text: fmtNum(r.forward_per_s, 1) }), el("span", { class: "muted", text: " out/s" }))));

    const devs = s.devices || [];
    const rows = devs.length ? devs.map((d) => el("tr", null,
      el("td", null, el("a", { href: "/devices?d=" + encodeURIComponent(d.device), text: d.device })),
      el("td", null, linkPill(d.state)),
      el("td", { class: "mono", text: d.bus + " · unit " + d.unit_id }),
      el("td", { text: fmtAgo(d.last_success_ms) }),
      el("td", { class: "num", text: d.rtt_avg_us ? (d.rtt_avg_us / 1000).toFixed(1) + " ms" : "–" }),
      el("td", { class: "num", text: fmtNum(d.failed_polls) + " / " + fmtNum(d.polls) }),
      el("td", { class: "wrap", text: d.last_error ? d.last_error + " (" + fmtAgo(d.last_error_ms) + ")" : "" })))
      : [el("tr", null, el("td", { class: "empty", colSpan: 7 }, "No Modbus devices configured. ", el("a", { href: "/devices", text: "Add a device" })))];
    clear(devices, el("h2", { text: "Devices" }),
      el("div", { class: "table-wrap" }, el("table", { id: "device-health" },
        el("thead", null, el("tr", null, ["Device", "State", "Bus", "Last good poll", "RTT", "Failed polls", "Last error"].map((h, i) => el("th", { class: i === 4 || i === 5 ? "num" : "", text: h })))),
        el("tbody", null, rows))));
  };
  poll(update, 2000);
}
