// A tiny SVG line chart (no library): two series over the last N samples.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export class RateChart {
  constructor(capacity = 90, periodS = 2) {
    this.period = periodS;
    this.scale = document.createElement("div");
    this.scale.className = "chart-scale";
    this.capacity = capacity;
    this.a = [];
    this.b = [];
    this.w = 600;
    this.h = 120;
    this.root = svg("svg", { class: "chart", viewBox: `0 0 ${this.w} ${this.h}`, preserveAspectRatio: "none", role: "img", "aria-label": "Ingest and forward rate, records per second" });
    this.grid = svg("g");
    this.lineA = svg("polyline", { class: "s-in", "vector-effect": "non-scaling-stroke" });
    this.lineB = svg("polyline", { class: "s-out", "vector-effect": "non-scaling-stroke" });
    this.root.append(this.grid, this.lineA, this.lineB);
  }

  push(a, b) {
    this.a.push(a); this.b.push(b);
    if (this.a.length > this.capacity) { this.a.shift(); this.b.shift(); }
    this.draw();
  }

  draw() {
    const max = niceMax(Math.max(1, ...this.a, ...this.b));
    while (this.grid.firstChild) this.grid.firstChild.remove();
    for (const f of [0.25, 0.5, 0.75]) {
      const y = (this.h * f).toFixed(1);
      this.grid.appendChild(svg("line", { class: "grid-line", x1: 0, x2: this.w, y1: y, y2: y, "vector-effect": "non-scaling-stroke" }));
    }
    this.scale.textContent = "Scale: 0 – " + max.toLocaleString("en-US") + " records/s, last " + Math.round(this.capacity * this.period / 60) + " min";
    const pts = (arr) => {
      const step = this.w / (this.capacity - 1);
      const off = this.capacity - arr.length;
      return arr.map((v, i) => `${((off + i) * step).toFixed(1)},${(this.h - 2 - (v / max) * (this.h - 16)).toFixed(1)}`).join(" ");
    };
    this.lineA.setAttribute("points", pts(this.a));
    this.lineB.setAttribute("points", pts(this.b));
  }
}
