// Shoal dashboard: polls /overview and /metrics once a second and redraws. No dependencies.
"use strict";

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const HISTORY = 120; // samples of the request rate kept for the sparkline
const rates = [];
let previous = null; // the last scrape's ask totals, for rates between scrapes

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function color(i) { return PALETTE[i % PALETTE.length]; }

// Each node keeps its colour while it is known: colours follow the member list, not the ring.
const colours = new Map();
function colourOf(name) {
  if (!colours.has(name)) colours.set(name, color(colours.size));
  return colours.get(name);
}

function seconds(s) {
  if (!isFinite(s)) return "–";
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}

function ago(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h ago";
}

function drawSummary(o) {
  const c = o.cluster;
  const up = o.members.filter((m) => m.state === "up").length;
  const failed = o.members.filter((m) => m.state === "failed").length;
  const majority = c.epoch === 0 ? "" : c.in_majority
    ? " · majority reachable" : " · NO MAJORITY: this side cannot commit changes";
  $("summary").textContent = `cluster ${c.cluster_id} · seen from ${c.self} · epoch ${c.epoch}` +
    ` (${c.config_members.length} members)${majority} · ${up} up` + (failed ? ` · ${failed} failed` : "");
  $("summary").className = "summary" + (c.epoch !== 0 && !c.in_majority ? " alarm" : failed ? " warn" : "");
}

function drawMembers(o) {
  for (const m of o.members) colourOf(m.name);
  const body = $("members").querySelector("tbody");
  body.replaceChildren(...o.members.map((m) => {
    const phi = m.phi === null || m.phi === undefined ? "–" : m.phi.toFixed(1);
    const phiBar = el("span", { class: "phi" }, el("span", {
      class: "phi-fill" + (m.phi > 8 ? " high" : ""),
      style: `width:${Math.min(100, (m.phi || 0) / 8 * 100)}%`,
    }), el("span", { class: "phi-text" }, phi));
    const name = m.name + (m.name === o.cluster.self ? " (this node)" : "");
    return el("tr", { "data-member": m.name, "data-state": m.state },
      el("td", {}, el("span", { class: "swatch", style: `background:${colourOf(m.name)}` }), name),
      el("td", { class: "mono" }, m.addr),
      el("td", {}, el("span", { class: "badge " + m.state }, m.state)),
      el("td", {}, m.member ? "yes" : "no"), el("td", {}, phiBar),
      el("td", { class: "num" }, m.primaries), el("td", { class: "num" }, m.replicas),
      el("td", {}, m.member ? (m.ready ? "yes" : "taking over…") : "–"));
  }));
  $("member-count").textContent = `${o.members.length}`;
}

function drawRing(o) {
  const ring = $("ring");
  const primary = o.ring.primary;
  const n = primary.length;
  ring.replaceChildren();
  const live = new Set(o.members.filter((m) => m.live).map((m) => m.name));
  $("shard-count").textContent = n ? `${n} shards` : "no configuration yet";
  const arc = (from, to, i) => {
    const a0 = (from / n) * 2 * Math.PI - Math.PI / 2;
    const a1 = (to / n) * 2 * Math.PI - Math.PI / 2;
    const [r0, r1] = [70, 100];
    const large = a1 - a0 > Math.PI ? 1 : 0;
    const p = (r, a) => `${(r * Math.cos(a)).toFixed(2)} ${(r * Math.sin(a)).toFixed(2)}`;
    const d = `M ${p(r1, a0)} A ${r1} ${r1} 0 ${large} 1 ${p(r1, a1)} L ${p(r0, a1)} ` +
      `A ${r0} ${r0} 0 ${large} 0 ${p(r0, a0)} Z`;
    const down = !live.has(o.ring.members[i]);
    const path = svg("path", { d, fill: colourOf(o.ring.members[i]), class: down ? "down" : "" });
    const title = svg("title", {});
    title.textContent = `shards ${from}–${to - 1}: ${o.ring.members[i]}` +
      (down ? " (primary failed: unavailable until they move)" : "");
    path.append(title);
    ring.append(path);
  };
  let start = 0;
  for (let s = 1; s <= n; s++) {
    if (s === n || primary[s] !== primary[start]) { arc(start, s, primary[start]); start = s; }
  }
  const center = svg("text", { x: 0, y: 6, "text-anchor": "middle", class: "ring-epoch" });
  center.textContent = `epoch ${o.cluster.epoch}`;
  ring.append(center);
  $("legend").replaceChildren(...o.ring.members.map((name, i) => {
    const count = primary.filter((p) => p === i).length;
    const down = live.has(name) ? "" : " (failed)";
    return el("li", {}, el("span", { class: "swatch", style: `background:${colourOf(name)}` }),
      `${name}: ${count}${down}`, el("span", { class: "bar", style: `width:${n ? count / n * 300 : 0}px;background:${colourOf(name)}` }));
  }));
}

function drawHandoffs(o) {
  // This node's own recovering shards are among them: it gossips that it is not ready yet.
  const items = o.handoffs.map((h) => el("li", {}, el("b", {}, h.node), " ", h.what));
  $("handoffs").replaceChildren(...(items.length ? items : [el("li", { class: "quiet" }, "none")]));
}

function drawEvents(o) {
  const items = o.events.slice(0, 30).map((e) => el("li", { class: "event " + e.kind },
    el("span", { class: "when" }, ago(e.at_ms, o.at_ms)), " ",
    el("span", { class: "badge " + e.kind }, e.kind), " ", el("b", {}, e.node),
    el("span", { class: "quiet" }, ` #${e.generation}`)));
  $("events").replaceChildren(...(items.length ? items : [el("li", { class: "quiet" }, "none yet")]));
}

function drawLocal(o) {
  const l = o.local;
  const rows = [["serving (primary)", l.serving], ["recovering", l.recovering],
    ["handing over", l.draining], ["backup copies", l.backups], ["failed (storage)", l.failed],
    ["writes awaiting a majority", l.pending_writes]];
  for (const [kind, n] of Object.entries(l.active)) rows.push([`active ${kind} entities`, n]);
  $("local").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

// The ask histogram from /metrics, summed over kinds: {count, sum, failed, buckets: {le: n}}.
function parseAsks(text) {
  const out = { count: 0, sum: 0, failed: 0, buckets: new Map() };
  for (const line of text.split("\n")) {
    if (!line.startsWith("shoal_ask_duration_seconds")) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (line.startsWith("shoal_ask_duration_seconds_bucket")) {
      const le = line.match(/le="([^"]+)"/);
      if (le) out.buckets.set(le[1], (out.buckets.get(le[1]) || 0) + value);
    } else if (line.startsWith("shoal_ask_duration_seconds_count")) {
      out.count += value;
      if (line.includes('outcome="error"')) out.failed += value;
    } else if (line.startsWith("shoal_ask_duration_seconds_sum")) {
      out.sum += value;
    }
  }
  return out;
}

// The q-quantile of the asks between two scrapes, from cumulative bucket counts, linearly
// interpolated within its bucket (as Prometheus' histogram_quantile does).
function quantile(q, now, before) {
  const les = [...now.buckets.keys()].sort((a, b) => Number(a) - Number(b));
  const total = now.count - before.count;
  if (total <= 0) return NaN;
  let lower = 0, below = 0;
  for (const le of les) {
    const upper = Number(le);
    const n = now.buckets.get(le) - (before.buckets.get(le) || 0);
    if (n >= q * total) {
      if (!isFinite(upper)) return lower;
      return lower + (upper - lower) * (q * total - below) / Math.max(1, n - below);
    }
    lower = upper; below = n;
  }
  return Infinity;
}

// Rates use the node's clock (`at_ms`), not the browser's: they are the node's figures.
function drawRequests(asks, at) {
  if (previous) {
    const dt = (at - previous.at) / 1000;
    const rate = (asks.count - previous.asks.count) / dt;
    const errors = (asks.failed - previous.asks.failed) / dt;
    $("rate").textContent = rate.toFixed(rate < 10 ? 1 : 0);
    $("errors").textContent = errors.toFixed(errors < 10 ? 1 : 0);
    $("p50").textContent = seconds(quantile(0.5, asks, previous.asks));
    $("p99").textContent = seconds(quantile(0.99, asks, previous.asks));
    rates.push(rate);
    if (rates.length > HISTORY) rates.shift();
    const max = Math.max(1, ...rates);
    const points = rates.map((r, i) => `${(i / (HISTORY - 1) * 120).toFixed(1)},${(30 - r / max * 28).toFixed(1)}`);
    $("spark").replaceChildren(svg("polyline", { points: points.join(" "), class: "spark-line" }));
  }
  previous = { asks, at };
}

async function refresh() {
  try {
    const [o, metrics] = await Promise.all([
      fetch("/overview", { cache: "no-store" }).then((r) => r.json()),
      fetch("/metrics", { cache: "no-store" }).then((r) => r.text()),
    ]);
    drawSummary(o); drawMembers(o); drawRing(o); drawHandoffs(o); drawEvents(o); drawLocal(o);
    drawRequests(parseAsks(metrics), o.at_ms);
    $("freshness").textContent = "updated " + new Date().toLocaleTimeString();
    $("freshness").className = "freshness";
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("freshness").textContent = "this node does not answer";
    $("freshness").className = "freshness alarm";
  }
}

refresh();
setInterval(refresh, 1000);
