// Status vocabulary shared by the dashboard and the devices page.
import { pill } from "/assets/app.js";

const UPLINK = {
  connected: ["ok", "Connected"],
  connecting: ["warn", "Connecting"],
  backing_off: ["warn", "Retrying"],
  error: ["bad", "Error"],
  disconnected: ["idle", "Not connected"],
};

export function uplinkPill(state) {
  const [k, t] = UPLINK[state] || ["idle", String(state || "unknown")];
  return pill(k, t);
}

const LINK = {
  ok: ["ok", "OK"],
  starting: ["idle", "Starting"],
  failing: ["warn", "Failing"],
  disconnected: ["bad", "Disconnected"],
  disabled: ["idle", "Disabled"],
};

export function linkPill(state) {
  const [k, t] = LINK[state] || ["idle", String(state || "unknown")];
  return pill(k, t);
}

const QUALITY = { good: ["ok", "Good"], bad: ["bad", "Bad"], stale: ["warn", "Stale"], uncertain: ["warn", "Uncertain"] };

export function qualityPill(q, reason) {
  const [k, t] = QUALITY[q] || ["idle", q ? String(q) : "No value"];
  return pill(k, reason && k !== "ok" ? `${t}: ${reason}` : t);
}
