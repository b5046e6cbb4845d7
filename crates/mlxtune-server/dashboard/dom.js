// Tiny DOM helpers: element creation without innerHTML (no injection from job data).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // Through the CSSOM: the Content-Security-Policy refuses inline style attributes.
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function badge(status) {
  return h('span', { class: `badge ${status}`, 'data-status': status }, status);
}

export function progressBar(pct) {
  const p = Math.max(0, Math.min(100, Number(pct) || 0));
  return h('span', { class: 'progress' },
    h('span', { class: 'bar' }, h('span', { style: { width: `${p}%` } })),
    h('span', { class: 'pct' }, `${p.toFixed(1)}%`));
}

export function time(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : '';
}

export function bytes(n) {
  if (!Number.isFinite(n)) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function num(n) {
  if (!Number.isFinite(n)) return '';
  const a = Math.abs(n);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return n.toExponential(2);
  return Number(n.toPrecision(4)).toString();
}
