// Small DOM helpers shared by the pages: templates, formatting, progress bars, the chart.

export const META = JSON.parse(document.getElementById("bulkport-meta").textContent);
export const ACTIVE = new Set(["pending", "processing"]);
/** Update interval of live pages (ms): polling, see docs/console.md. */
export const POLL_MS = 1000;

/** A copy of a <template>'s content (a DocumentFragment). */
export function template(id) {
  return document.getElementById(id).content.cloneNode(true);
}

export function $(root, selector) { return root.querySelector(selector); }

export function options(select, values, keepFirst = false) {
  if (!keepFirst) select.replaceChildren();
  for (const v of values) select.append(new Option(v, v));
}

const numberFormat = new Intl.NumberFormat("en");
export function num(n) { return n === null || n === undefined ? "–" : numberFormat.format(n); }

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

export function setBar(bar, fraction, label) {
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 1000) / 10));
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuetext", label || `${pct}%`);
  bar.firstElementChild.style.width = `${pct}%`;
}

export function setBadge(badge, status) {
  badge.textContent = status.replaceAll("_", " ");
  badge.dataset.value = status;
}

/** A <dl> of label → value pairs, rebuilt in place. */
export function counters(dl, pairs) {
  dl.replaceChildren(...pairs.map(([k, v]) => {
    const pair = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    pair.append(dt, dd);
    return pair;
  }));
}

export function showError(el, err) {
  el.hidden = !err;
  el.textContent = err ? err.message || String(err) : "";
}

/**
 * Call fn now and POLL_MS after each answer, until it returns false or stop() is called.
 * A hidden tab (another tab in front, a minimised window) asks nothing until shown again.
 */
export function poll(fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    let again = true;
    if (document.hidden) { timer = setTimeout(tick, POLL_MS); return; }
    try { again = (await fn()) !== false; } catch { again = true; }
    if (!stopped && again) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** Rows/s over time as an inline SVG polyline: samples are [seconds, rate]. */
export function drawChart(figure, samples) {
  if (samples.length < 2) return;
  figure.hidden = false;
  const t0 = samples[0][0];
  const span = Math.max(samples[samples.length - 1][0] - t0, 1);
  const top = Math.max(...samples.map(([, r]) => r), 1);
  const points = samples.map(([t, r]) =>
    `${((t - t0) / span * 300).toFixed(1)},${(78 - r / top * 74).toFixed(1)}`);
  figure.querySelector("polyline").setAttribute("points", points.join(" "));
  const last = samples[samples.length - 1][1];
  figure.querySelector("[data-chart-max]").textContent =
    `now ${num(Math.round(last))} rows/s · peak ${num(Math.round(top))} rows/s`;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of [].concat(v)) if (one !== "" && one !== null && one !== undefined) q.append(k, one);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
