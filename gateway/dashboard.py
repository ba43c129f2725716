"""The live dashboard: one self-contained HTML page (no external assets) served at `/`.

It subscribes to everything over `/ws`, keeps the latest state of up to `MAX_JOBS` jobs
to count jobs per state, lists the latest events, renders at most once per animation
frame however fast events arrive, and reconnects with its last cursor.
"""

from __future__ import annotations

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobstream gateway</title>
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
 h1{font-size:1.2rem;margin:0 0 .8rem} #conn{font-size:.85rem;color:#777;margin-left:.6rem}
 #counts{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}
 .c{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem .7rem;min-width:6rem}
 .c b{display:block;font-size:1.3rem}
 table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
 td,th{border-bottom:1px solid #eee;padding:.25rem .5rem;text-align:left;white-space:nowrap}
 td.m{font-family:ui-monospace,monospace}
 .completed{color:#176c2f}.failed,.dead{color:#b3261e}.retrying{color:#9a5b00}.active,.progress{color:#1a5fb4}
</style></head><body>
<h1>jobstream <span id="conn">connecting&hellip;</span></h1>
<div id="counts"></div>
<div id="rate"></div>
<table><thead><tr><th>at</th><th>job</th><th>type</th><th>state</th><th>attempt</th><th>detail</th></tr></thead>
<tbody id="events"></tbody></table>
<script>
"use strict";
const MAX_JOBS = 50000, MAX_ROWS = 50;
const STATES = ["scheduled","queued","active","completed","retrying","failed","dead","cancelled","replayed"];
const jobs = new Map(), counts = Object.fromEntries(STATES.map(s => [s, 0]));
let latest = [], total = 0, cursor = null, dirty = false, seen = 0, rateAt = performance.now(), rate = 0;
const $ = id => document.getElementById(id);

function track(ev) {
  const state = ev.state === "progress" ? "active" : ev.state;
  const prev = jobs.get(ev.job_id);
  if (prev !== undefined) { counts[prev] = (counts[prev] || 1) - 1; jobs.delete(ev.job_id); }
  jobs.set(ev.job_id, state);
  counts[state] = (counts[state] || 0) + 1;
  if (jobs.size > MAX_JOBS) {  // forget the job seen least recently
    const [id, s] = jobs.entries().next().value;
    jobs.delete(id); counts[s] -= 1;
  }
}

function render() {
  dirty = false;
  const now = performance.now();
  if (now - rateAt >= 1000) { rate = Math.round(seen * 1000 / (now - rateAt)); seen = 0; rateAt = now; }
  const box = $("counts"); box.textContent = "";
  for (const s of Object.keys(counts)) {
    const d = document.createElement("div"); d.className = "c " + s;
    const b = document.createElement("b"); b.textContent = counts[s];
    d.append(b, s); box.append(d);
  }
  $("rate").textContent = total + " events, " + rate + "/s, " + jobs.size + " jobs tracked";
  const body = $("events"); body.textContent = "";
  for (const ev of latest) {
    const tr = document.createElement("tr");
    const detail = ev.error ? ev.error.type + ": " + ev.error.message
      : ev.progress ? Math.round(ev.progress.percent) + "% " + (ev.progress.message || "") : "";
    const cells = [new Date(ev.at).toLocaleTimeString(), ev.job_id, ev.type, ev.state, ev.attempt, detail];
    cells.forEach((v, i) => {
      const td = document.createElement("td"); td.textContent = v == null ? "" : String(v);
      if (i === 1) td.className = "m"; if (i === 3) td.className = ev.state; tr.append(td);
    });
    body.append(tr);
  }
}

function schedule() { if (!dirty) { dirty = true; requestAnimationFrame(render); } }

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => {
    $("conn").textContent = "live";
    const sub = {all: true};
    if (cursor) sub.cursor = cursor;
    ws.send(JSON.stringify({subscribe: sub}));
  };
  ws.onmessage = m => {
    const f = JSON.parse(m.data);
    if (f.events) {
      for (const ev of f.events) track(ev);
      total += f.events.length; seen += f.events.length;
      latest = f.events.slice(-MAX_ROWS).reverse().concat(latest).slice(0, MAX_ROWS);
      schedule();
    } else if (f.error) {
      $("conn").textContent = "live (" + f.error + ")";
    }
    if (f.cursor) cursor = f.cursor;
  };
  ws.onclose = e => {
    $("conn").textContent = "disconnected (" + e.code + (e.reason ? " " + e.reason : "") + "), retrying";
    setTimeout(connect, 1000);
  };
}
render();
connect();
</script></body></html>
"""
