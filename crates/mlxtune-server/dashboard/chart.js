// A small SVG line chart: series of (x, y) points keyed by x (a step), so a point that
// arrives twice replaces itself. The element carries `data-points` (points in the first
// series), `data-first-x` and `data-last-x` for tests and tooling.

import { h, num } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const H = 170, L = 66, R = 10, T = 8, B = 20;

function s(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// An axis label with enough digits to tell the ticks of a narrow range apart.
function tick(y, y0, y1) {
  const span = Math.abs(y1 - y0);
  const mag = Math.max(Math.abs(y0), Math.abs(y1));
  if (!span || !mag) return num(y);
  const digits = Math.min(8, Math.max(3, Math.ceil(Math.log10(mag / span)) + 2));
  const a = Math.abs(y);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return y.toExponential(digits - 1);
  return Number(y.toPrecision(digits)).toString();
}

// At most the first, lowest, highest and last point of each pixel column: the same picture
// as every point, at a cost bounded by the width however long the job.
function thin(pts, px, width) {
  if (pts.length <= 2 * width) return pts;
  const out = [];
  let col = null, bucket = [];
  const flush = () => {
    if (!bucket.length) return;
    let lo = bucket[0], hi = bucket[0];
    for (const p of bucket) { if (p[1] < lo[1]) lo = p; if (p[1] > hi[1]) hi = p; }
    const keep = new Set([bucket[0], lo, hi, bucket[bucket.length - 1]]);
    out.push(...bucket.filter((p) => keep.has(p)));
    bucket = [];
  };
  for (const p of pts) {
    const c = Math.floor(px(p[0]));
    if (c !== col) { flush(); col = c; }
    bucket.push(p);
  }
  flush();
  return out;
}

export class LineChart {
  constructor(id, title, series, format = num) {
    this.series = series.map((x) => ({ ...x, points: new Map() }));
    this.format = format;
    this.svg = s('svg', { role: 'img', 'aria-label': title });
    this.value = h('small', {});
    this.el = h('figure', { class: 'chart', id: `chart-${id}`, 'data-points': 0 },
      h('h3', {}, title, this.value),
      this.svg,
      series.length > 1 ? h('div', { class: 'legend' }, series.map((x) =>
        [h('i', { style: { background: x.color } }), x.name])) : null);
    this.pending = false;
    // Drawn in CSS pixels (text undistorted): redraw when the width changes.
    new ResizeObserver(() => this.schedule()).observe(this.svg);
  }

  add(seriesName, x, y) {
    const ser = this.series.find((z) => z.name === seriesName);
    if (!ser || !Number.isFinite(x) || !Number.isFinite(y)) return;
    ser.points.set(x, y);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    const all = this.series.flatMap((z) => [...z.points.entries()]);
    const first = [...this.series[0].points.keys()];
    let fx0 = Infinity, fx1 = -Infinity; // no Math.min(...xs): a long job overflows the stack
    for (const x of first) { fx0 = Math.min(fx0, x); fx1 = Math.max(fx1, x); }
    this.el.dataset.points = String(first.length);
    this.el.dataset.firstX = first.length ? String(fx0) : '';
    this.el.dataset.lastX = first.length ? String(fx1) : '';
    this.svg.replaceChildren();
    const W = Math.max(200, Math.round(this.svg.clientWidth || 400));
    this.svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    if (!all.length) return;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const [x, y] of all) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 += Math.abs(y1) * 0.05 || 1; y0 -= Math.abs(y0) * 0.05 || 1; }
    const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const py = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      const y = y0 + f * (y1 - y0);
      this.svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: py(y), y2: py(y) }));
      const t = s('text', { class: 'axis', x: L - 4, y: py(y) + 3, 'text-anchor': 'end' });
      t.textContent = this.format === num ? tick(y, y0, y1) : this.format(y);
      this.svg.append(t);
    }
    for (const [x, anchor] of [[x0, 'start'], [x1, 'end']]) {
      const t = s('text', { class: 'axis', x: px(x), y: H - 5, 'text-anchor': anchor });
      t.textContent = `step ${Math.round(x)}`;
      this.svg.append(t);
    }
    for (const ser of this.series) {
      const pts = [...ser.points.entries()].sort((a, b) => a[0] - b[0]);
      if (!pts.length) continue;
      const d = thin(pts, px, W).map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
      this.svg.append(s('polyline', {
        points: d, fill: 'none', stroke: ser.color, 'stroke-width': 1.6,
        'stroke-linejoin': 'round', 'data-series': ser.name,
      }));
      if (pts.length < 40 || (ser.dots && pts.length < 400)) {
        for (const [x, y] of pts) {
          this.svg.append(s('circle', { cx: px(x), cy: py(y), r: 2.2, fill: ser.color }));
        }
      }
    }
    const latest = [...this.series[0].points.entries()].sort((a, b) => a[0] - b[0]).pop();
    this.value.textContent = latest ? this.format(latest[1]) : '';
  }
}
