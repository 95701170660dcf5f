// jetinfer dashboard: renders one snapshot per second from /api/stream (SSE).
"use strict";

const $ = (sel) => document.querySelector(sel);
const NS = "http://www.w3.org/2000/svg";
let last = null;

function fmtInt(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }
function fmtMs(ms) {
  if (ms == null) return "–";
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms";
}
function fmtAge(ms) { return ms < 1000 ? "now" : Math.round(ms / 1000) + " s ago"; }
function shortId(id) { return id ? String(id).slice(0, 8) : "–"; }
// A request's text as the dashboard may show it: the preview where inputs
// are shown, else its length and the gateway's short hash.
function inputText(r) {
  if (r.input) return r.input;
  if (r.input_hash) return fmtInt(r.input_chars) + " chars · #" + r.input_hash;
  return "hidden";
}
const INPUTS = {
  hidden: "request text hidden",
  shown: "request text shown (DASHBOARD_SHOW_INPUTS)",
  refused: "input previews refused by NATS: the dashboard role may not read infer.task.>",
};

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "–" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fillTable(tableSel, emptySel, items, build) {
  const body = $(tableSel + " tbody");
  const rows = items.map((item) => { const tr = document.createElement("tr"); build(tr, item); return tr; });
  body.replaceChildren(...rows);
  $(emptySel).hidden = items.length > 0;
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text != null) el.textContent = text;
  return el;
}

// A line chart with axes and a legend; missing values (null) break the line.
// Always draws its frame, so a chart is never a blank box while data arrives.
function lineChart(svg, series, names) {
  const W = 600, H = 200, L = 40, B = 18, T = 8;
  const all = series.flat().filter((v) => v != null);
  const max = Math.max(1, ...all) * 1.1;
  const n = Math.max(2, series[0].length);
  const x = (i) => L + (i * (W - L - 4)) / (n - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const kids = [];
  for (const f of [0, 0.5, 1]) {
    kids.push(svgEl("line", { class: "grid", x1: L, x2: W, y1: y(max * f), y2: y(max * f) }));
    kids.push(svgEl("text", { x: 2, y: y(max * f) + 4 }, max * f >= 100 ? Math.round(max * f) : (max * f).toFixed(1)));
  }
  kids.push(svgEl("text", { x: L, y: H - 4 }, "-5 min"));
  kids.push(svgEl("text", { x: W - 28, y: H - 4 }, "now"));
  series.forEach((values, s) => {
    let points = [];
    const flush = () => {
      if (points.length > 1) kids.push(svgEl("polyline", { class: "s" + s, points: points.map((p) => p.join(",")).join(" ") }));
      // A lone second between gaps is still a value: draw it as a dot.
      if (points.length === 1) kids.push(svgEl("circle", { class: "s" + s, cx: points[0][0], cy: points[0][1], r: 2.5 }));
      points = [];
    };
    values.forEach((v, i) => { if (v == null) flush(); else points.push([x(i).toFixed(1), y(v).toFixed(1)]); });
    flush();
    kids.push(svgEl("text", { x: L + 8 + s * 90, y: T + 12, class: "legend l" + s }, "— " + names[s]));
  });
  svg.replaceChildren(...kids);
}

function barChart(svg, bars) {
  const W = 600, H = 200, B = 18, T = 8;
  const max = Math.max(1, ...bars.map((b) => b.value)) * 1.1;
  const kids = [svgEl("line", { class: "grid", x1: 0, x2: W, y1: H - B, y2: H - B })];
  if (bars.length === 0) kids.push(svgEl("text", { x: W / 2 - 60, y: H / 2 }, "no workers connected"));
  const w = bars.length ? (W - 20) / bars.length : 0;
  bars.forEach((b, i) => {
    const h = ((H - T - B) * b.value) / max;
    kids.push(svgEl("rect", { class: "bar" + (b.alive ? "" : " dead"), x: 10 + i * w + 6, y: H - B - h, width: Math.max(4, w - 12), height: h }));
    kids.push(svgEl("text", { x: 10 + i * w + 8, y: H - 4 }, b.label));
    kids.push(svgEl("text", { x: 10 + i * w + 8, y: Math.max(T + 10, H - B - h - 4) }, fmtInt(b.value)));
  });
  svg.replaceChildren(...kids);
}

function isError(r) { return r.outcome !== "ok"; }

function renderRecent() {
  if (!last) return;
  const filter = $("#outcome-filter").value;
  const rows = last.recent.filter((r) =>
    filter === "all" || (filter === "ok" && !isError(r)) || (filter === "error" && isError(r)) || (filter === "retried" && r.retries > 0));
  fillTable("#recent", "#recent-empty", rows, (tr, r) => {
    tr.dataset.outcome = isError(r) ? "error" : "ok";
    cell(tr, shortId(r.request_id)).title = r.request_id;
    cell(tr, r.task);
    cell(tr, r.worker_id);
    cell(tr, fmtMs(r.latency_ms));
    cell(tr, r.retries);
    cell(tr, r.outcome, isError(r) ? "outcome-error" : "outcome-ok");
    cell(tr, r.error, "text");
    cell(tr, inputText(r), "text");
    cell(tr, r.output, "text");
  });
}

function render(s) {
  last = s;
  const natsOk = s.nats === "connected";
  $("#conn").textContent = "NATS " + s.nats;
  $("#conn").className = "badge " + (natsOk ? "ok" : "bad");
  $("#updated").textContent = "updated " + new Date(s.now_ms).toLocaleTimeString();
  $("#inputs").textContent = INPUTS[s.inputs] || "";
  const banner = $("#banner");
  banner.hidden = natsOk;
  if (!natsOk) banner.textContent = "NATS unreachable — retrying. The numbers below are the last ones seen.";

  const m = s.metrics;
  $("#m-submitted").textContent = fmtInt(m.submitted);
  $("#m-completed").textContent = fmtInt(m.completed);
  $("#m-failed").textContent = fmtInt(m.failed);
  $("#m-retried").textContent = fmtInt(m.retried);
  $("#m-queue").textContent = fmtInt(m.queue_depth);
  $("#m-dead").textContent = fmtInt(m.dead_letters);
  $("#m-rps").textContent = m.requests_per_s.toFixed(1);
  $("#m-p50").textContent = fmtMs(m.p50_ms);
  $("#m-p95").textContent = fmtMs(m.p95_ms);

  lineChart($("#chart-throughput"), [s.series.map((p) => p.completed), s.series.map((p) => p.failed)], ["ok/s", "failed/s"]);
  lineChart($("#chart-latency"), [s.series.map((p) => p.p50), s.series.map((p) => p.p95)], ["p50", "p95"]);
  barChart($("#chart-load"), s.workers.map((w) => ({ label: w.id, value: w.load_last_min, alive: w.alive })));

  fillTable("#workers", "#workers-empty", s.workers, (tr, w) => {
    tr.className = w.alive ? "alive" : "dead";
    tr.dataset.workerId = w.id;
    cell(tr, w.id);
    cell(tr, w.alive ? "alive" : "dead", "status");
    cell(tr, w.models.join(", "));
    cell(tr, w.tasks.join(", "));
    cell(tr, w.in_flight);
    cell(tr, fmtInt(w.processed));
    cell(tr, fmtInt(w.failed));
    cell(tr, fmtInt(w.redelivered));
    cell(tr, fmtAge(w.heartbeat_age_ms));
    cell(tr, fmtMs(w.last_batch_ms));
  });

  $("#pending-count").textContent = s.pending_total ? "(" + s.pending_total + ")" : "";
  fillTable("#pending", "#pending-empty", s.pending, (tr, p) => {
    // A batch row: a worker started it, its requests are not listed one by one.
    if (p.request_id) cell(tr, shortId(p.request_id)).title = p.request_id;
    else cell(tr, "batch " + shortId(p.batch_id) + " ×" + p.requests).title = p.batch_id;
    cell(tr, p.task);
    cell(tr, p.state);
    cell(tr, p.worker);
    cell(tr, fmtMs(p.age_ms));
    cell(tr, p.input || (s.inputs === "hidden" ? "hidden" : null), "text");
  });

  const events = s.events.map((e) => {
    const li = document.createElement("li");
    const kind = document.createElement("span");
    kind.className = "kind " + e.kind;
    kind.textContent = e.kind;
    const what = [e.worker_id, e.batch_id ? "batch " + shortId(e.batch_id) : null,
      e.requests ? e.requests + " req" : null, e.attempt > 1 ? "attempt " + e.attempt : null, e.error].filter(Boolean).join(" · ");
    li.append(kind, new Date(e.at_ms).toLocaleTimeString() + " " + what);
    return li;
  });
  $("#events").replaceChildren(...events);
  $("#events-empty").hidden = events.length > 0;
  renderRecent();
}

$("#outcome-filter").addEventListener("change", renderRecent);

const stream = new EventSource("/api/stream");
stream.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
stream.onerror = () => {
  // CLOSED: the server answered but refused the stream (401: the session
  // ended); reloading shows the login form. Otherwise the browser retries.
  if (stream.readyState === EventSource.CLOSED) { location.reload(); return; }
  $("#conn").textContent = "dashboard unreachable";
  $("#conn").className = "badge bad";
  $("#banner").hidden = false;
  $("#banner").textContent = "Lost the dashboard server — retrying.";
};
