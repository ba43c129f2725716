// One class per page. A view fetches what it needs from the API (`api`), reads the live
// feed's `store`, and returns its content from `render()`; `app.js` calls `render()` at
// most once per animation frame, and `leave()` when another page opens.

import {api} from "./api.js";
import {STATES} from "./store.js";
import {dateTime, detailOf, h, json, sparkline, time} from "./dom.js";

const TERMINAL = new Set(["completed", "dead", "cancelled", "replayed"]);
const REASONS = ["exhausted", "non_retryable", "poison", "timeout", "expired", "unknown_type", "rejected"];

export class View {
  constructor(app) {
    this.app = app;
    this.store = app.store;
    this.timers = [];
    this.error = "";
  }

  every(ms, fn) {
    fn();
    this.timers.push(setInterval(fn, ms));
  }

  leave() {
    for (const t of this.timers) clearInterval(t);
  }

  // Run `work`, keeping its error to show; re-render either way.
  async attempt(work) {
    try {
      this.error = "";
      return await work();
    } catch (err) {
      this.error = err.message;
      return undefined;
    } finally {
      this.app.changed();
    }
  }

  problem() {
    return this.error ? h("p", {class: "error", role: "alert"}, this.error) : null;
  }
}

export function stateCell(state) {
  return h("td", {class: state}, state);
}

export function jobLink(id) {
  return h("a", {href: `#/jobs/${encodeURIComponent(id)}`, class: "mono"}, id);
}

export class QueuesView extends View {
  enter() {
    this.queues = null;
    this.depths = new Map();  // queue name -> recent depths
    this.every(2000, () => this.attempt(async () => {
      this.queues = await api("GET", "/queues");
      for (const q of this.queues.queues) {
        const series = this.depths.get(q.name) || [];
        series.push(q.depth ?? 0);
        if (series.length > 60) series.shift();
        this.depths.set(q.name, series);
      }
    }));
  }

  render() {
    const s = this.store;
    s.tick();
    const cards = STATES.map((state) => h("div", {class: `card ${state}`, "data-state": state}, h("b", {}, s.counts[state] || 0), state));
    const rates = [["events/s", s.rates.events], ["completed/s", s.rates.completed], ["failed/s", s.rates.failed],
      ["mean queue wait, ms", s.waits()]].map(
      ([name, series]) => h("div", {class: "card", "data-rate": name}, h("b", {}, series[series.length - 2] ?? 0), name, sparkline(series)));
    const q = this.queues;
    const rows = q ? q.queues.map((x) => h("tr", {"data-queue": x.name},
      h("td", {}, x.name), h("td", {}, x.kind), h("td", {class: "num"}, x.depth ?? "?"),
      h("td", {}, sparkline(this.depths.get(x.name) || [], 90, 20)),
      h("td", {class: "num"}, x.end_offset), h("td", {class: "num"}, x.partitions), h("td", {class: "mono"}, x.topic))) : [];
    return h("div", {},
      h("h2", {}, "Jobs seen live, by latest state"), h("div", {class: "cards"}, cards),
      h("div", {class: "cards"}, rates),
      h("h2", {}, "Queues"), this.problem(),
      q ? h("p", {class: "note"},
        `delayed: ${q.delayed.waiting} waiting, ${q.delayed.claimed} being fired · dead letters: ${q.dead_letters.indexed} indexed · consumer group ${q.group}`) : h("p", {class: "note"}, "loading…"),
      h("table", {id: "queues"}, h("thead", {}, h("tr", {}, ["queue", "kind", "depth (lag)", "last 2 min", "end offset", "partitions", "topic"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows)));
  }
}

export class JobsView extends View {
  enter() {
    this.type = "";
    this.state = "";
    this.query = "";
  }

  render() {
    const types = [...this.store.types].sort();
    const jobs = this.store.recent((j) => (!this.type || j.type === this.type) && (!this.state || j._state === this.state), 100);
    const search = h("input", {id: "job-search", placeholder: "job id", size: 40, value: this.query,
      oninput: (e) => { this.query = e.target.value; }});
    const go = () => this.query.trim() && this.app.go(`#/jobs/${encodeURIComponent(this.query.trim())}`);
    search.addEventListener("keydown", (e) => e.key === "Enter" && go());
    const typeSelect = h("select", {id: "type-filter", onchange: (e) => { this.type = e.target.value; this.app.changed(); }},
      h("option", {value: ""}, "every type"), types.map((t) => h("option", {value: t, selected: t === this.type}, t)));
    const stateSelect = h("select", {id: "state-filter", onchange: (e) => { this.state = e.target.value; this.app.changed(); }},
      h("option", {value: ""}, "every state"), STATES.map((s) => h("option", {value: s, selected: s === this.state}, s)));
    return h("div", {},
      h("div", {class: "filters"}, search, h("button", {onclick: go}, "Open"), typeSelect, stateSelect,
        h("span", {class: "note"}, `${this.store.jobs.size} jobs seen since this page opened`)),
      h("table", {id: "jobs"}, h("thead", {}, h("tr", {}, ["job", "type", "state", "attempt", "updated", "detail"].map((c) => h("th", {}, c)))),
        h("tbody", {}, jobs.map((j) => h("tr", {"data-job": j.job_id}, h("td", {}, jobLink(j.job_id)), h("td", {}, j.type),
          stateCell(j.state), h("td", {class: "num"}, j.attempt), h("td", {}, time(j.at)), h("td", {}, detailOf(j)))))));
  }
}

export class JobView extends View {
  enter([id]) {
    this.id = decodeURIComponent(id);
    this.job = null;
    this.cancelled = "";
    this.seen = "";
    this.tries = 0;
    this.again = null;
    this.loading = false;
    this.record = null;
    this.recordNote = "loading…";
    this.load();
    this.loadRecord();
  }

  // The job as submitted (its payload), read once: a record does not change.
  loadRecord() {
    api("GET", `/jobs/${encodeURIComponent(this.id)}/record`)
      .then((r) => { this.record = r; })
      .catch((err) => { this.recordNote = `not available: ${err.message}`; })
      .finally(() => this.app.changed());
  }

  load() {
    this.loading = true;
    return this.attempt(async () => {
      const path = `/jobs/${encodeURIComponent(this.id)}`;
      try {
        [this.job, this.timeline] = await Promise.all([api("GET", path), api("GET", `${path}/events`).then((b) => b.events)]);
      } finally {
        this.loading = false;
      }
    });
  }

  payload() {
    const r = this.record;
    if (!r) return h("p", {class: "note", id: "payload-note"}, this.recordNote);
    const where = r.source === "kafka" ? `record ${r.topic}[${r.partition}]@${r.offset}` : "waiting in Redis until due";
    return [h("pre", {id: "payload"}, json(r.job.payload)), h("p", {class: "note"}, where)];
  }

  // The recorded timeline and the events seen live, each once, in time order.
  events() {
    const seen = new Set();
    const all = [...(this.timeline || []), ...(this.store.events.get(this.id) || [])];
    return all.filter((e) => {
      const k = `${e.state}/${e.attempt}/${e.at}`;
      return seen.has(k) ? false : seen.add(k);
    }).sort((a, b) => a.at - b.at);
  }

  leave() {
    super.leave();
    clearTimeout(this.again);
  }

  // The live feed can be ahead of the job as the API reads it (its projection is written
  // in batches; a job just submitted may not be in it yet): on a new state seen live, read
  // the job again, with growing pauses, until the two agree (a few tries: a duplicate event
  // the projection rightly ignores never does).
  catchUp(live) {
    const last = live.findLast((e) => e.state !== "progress");
    const now = last ? `${last.state}/${last.attempt}/${last.at}` : "";
    if (now !== this.seen) {
      this.seen = now;
      this.tries = 0;
    }
    const j = this.job;
    if (!last || this.loading || this.again || this.tries >= 6) return;
    if (j && (last.state === j.state || last.at < j.updated_at)) return;
    this.again = setTimeout(async () => {
      await this.load();
      this.again = null;
    }, 100 * 2 ** this.tries++);
  }

  render() {
    const live = this.store.events.get(this.id) || [];
    const last = live[live.length - 1];
    this.catchUp(live);
    const events = this.events();
    const j = this.job;
    if (!j) return h("div", {}, h("h2", {}, `Job ${this.id}`), this.problem() || h("p", {class: "note"}, "loading…"));
    const cancel = TERMINAL.has(j.state) ? null : h("button", {class: "danger", id: "cancel", onclick: () => this.attempt(async () => {
      const r = await api("DELETE", `/jobs/${encodeURIComponent(this.id)}`);
      this.cancelled = r.state;
      await this.load();
    })}, "Cancel");
    const err = j.error;
    const progress = (last?.state === "progress" && last.at >= j.updated_at ? last.progress : null) ?? j.progress;
    return h("div", {},
      h("h2", {}, "Job ", h("span", {class: "mono"}, j.id), " ", h("span", {class: j.state, id: "job-state"}, j.state), " ", cancel,
        this.cancelled ? h("span", {class: "note"}, ` ${this.cancelled}`) : null),
      this.problem(),
      h("dl", {class: "fields"},
        h("dt", {}, "type"), h("dd", {}, j.type),
        h("dt", {}, "attempt"), h("dd", {}, j.attempt),
        j.priority ? [h("dt", {}, "priority"), h("dd", {}, j.priority)] : null,
        j.key ? [h("dt", {}, "key"), h("dd", {class: "mono"}, j.key)] : null,
        j.schedule ? [h("dt", {}, "schedule"), h("dd", {id: "schedule"}, h("a", {href: `#/schedules/${encodeURIComponent(j.schedule)}`, class: "mono"}, j.schedule),
          ` occurrence of ${dateTime(j.occurrence_at)}`)] : null,
        h("dt", {}, "created"), h("dd", {}, dateTime(j.created_at)),
        h("dt", {}, "updated"), h("dd", {}, dateTime(j.updated_at)),
        progress ? [h("dt", {}, "progress"), h("dd", {}, h("progress", {max: 100, value: progress.percent ?? 0}), ` ${progress.message ?? ""}`)] : null,
        j.parent_id ? [h("dt", {}, "parent"), h("dd", {}, jobLink(j.parent_id))] : null,
        j.children?.length ? [h("dt", {}, "children"), h("dd", {}, j.children.map((c) => [jobLink(c), " "]))] : null),
      h("h2", {}, "Payload"), this.payload(),
      j.result !== undefined && j.result !== null ? [h("h2", {}, "Result"), h("pre", {id: "result"}, json(j.result))] : null,
      err ? [h("h2", {}, "Error"), h("p", {class: "error", id: "error"}, `${err.type}: ${err.message}`),
        err.traceback ? h("pre", {id: "traceback"}, err.traceback) : null] : null,
      h("h2", {}, "Timeline"),
      h("table", {id: "timeline"}, h("thead", {}, h("tr", {}, ["at", "state", "attempt", "worker", "detail"].map((c) => h("th", {}, c)))),
        h("tbody", {}, events.map((e) => h("tr", {}, h("td", {}, time(e.at)), stateCell(e.state), h("td", {class: "num"}, e.attempt),
          h("td", {class: "mono"}, e.worker ?? ""), h("td", {}, detailOf(e)))))));
  }
}

export class DeadLettersView extends View {
  enter() {
    this.filter = {type: "", reason: "", since: "", until: "", q: ""};
    this.page = null;
    this.dry = null;
    this.replay = null;
    this.search();
  }

  query() {
    const f = this.filter;
    const out = {};
    if (f.type) out.types = [f.type];
    if (f.reason) out.reasons = [f.reason];
    if (f.since) out.since = new Date(f.since).toISOString();
    if (f.until) out.until = new Date(f.until).toISOString();
    if (f.q) out.q = f.q;
    return out;
  }

  search(cursor) {
    const q = this.query();
    const params = new URLSearchParams({limit: "50"});
    if (q.types) params.append("type", q.types[0]);
    if (q.reasons) params.append("reason", q.reasons[0]);
    for (const k of ["since", "until", "q"]) if (q[k]) params.append(k, q[k]);
    if (cursor) params.append("cursor", cursor);
    this.dry = null;
    return this.attempt(async () => { this.page = await api("GET", `/dlq?${params}`); });
  }

  render() {
    const f = this.filter;
    const input = (name, attrs) => h("input", {...attrs, id: `dlq-${name}`, value: f[name], oninput: (e) => { f[name] = e.target.value; }});
    const p = this.page;
    return h("div", {},
      h("div", {class: "filters"},
        input("type", {placeholder: "type"}),
        h("select", {id: "dlq-reason", onchange: (e) => { f.reason = e.target.value; }},
          h("option", {value: ""}, "every reason"), REASONS.map((r) => h("option", {value: r, selected: r === f.reason}, r))),
        "from", input("since", {type: "datetime-local"}), "to", input("until", {type: "datetime-local"}),
        input("q", {placeholder: "text in errors"}),
        h("button", {onclick: () => this.search()}, "Filter"),
        h("button", {id: "dry-run", onclick: () => this.attempt(async () => { this.dry = await api("POST", "/dlq/replay", {...this.query(), dry_run: true}); })}, "Dry-run a replay")),
      this.problem(),
      this.dry ? h("p", {id: "dry"}, `${this.dry.matched} dead letters match. `,
        this.dry.matched ? h("button", {id: "replay", onclick: () => this.startReplay(this.query())}, `Replay ${this.dry.matched}`) : null) : null,
      replayProgress(this.replay),
      p ? h("table", {id: "dead-letters"}, h("thead", {}, h("tr", {}, ["dead letter", "type", "reason", "dead at", "attempts", "last error", "replayed"].map((c) => h("th", {}, c)))),
        h("tbody", {}, p.items.map((d) => h("tr", {"data-dead": d.id}, h("td", {}, h("a", {href: `#/dlq/${encodeURIComponent(d.id)}`, class: "mono"}, d.id)),
          h("td", {}, d.type ?? "(poison)"), h("td", {}, d.reason), h("td", {}, dateTime(d.dead_at)), h("td", {class: "num"}, d.attempts),
          h("td", {}, d.last_error ? `${d.last_error.type}: ${d.last_error.message}` : ""), h("td", {}, d.replayed_by ? "yes" : ""))))) : null,
      p?.next_cursor ? h("button", {onclick: () => this.search(p.next_cursor)}, "Older") : null);
  }

  startReplay(body) {
    return this.attempt(async () => {
      const started = await api("POST", "/dlq/replay", {...body, dry_run: false});
      this.replay = {replay_id: started.replay_id, matched: started.matched, replayed: 0, skipped: 0, failed: 0, state: "running"};
      const poll = setInterval(() => this.attempt(async () => {
        this.replay = await api("GET", `/dlq/replays/${encodeURIComponent(started.replay_id)}`);
        if (this.replay.state !== "running") {
          clearInterval(poll);
          this.replayDone();
        }
      }), 300);
      this.timers.push(poll);
    });
  }
}

DeadLettersView.prototype.replayDone = function () {
  this.search();
};

function replayProgress(r) {
  if (!r) return null;
  const done = (r.replayed ?? 0) + (r.skipped ?? 0) + (r.failed ?? 0);
  return h("p", {id: "replay-progress", "data-state": r.state},
    h("progress", {max: Math.max(1, r.matched), value: done}),
    ` replay ${r.replay_id}: ${r.state}, ${r.replayed ?? 0} replayed, ${r.skipped ?? 0} skipped, ${r.failed ?? 0} failed of ${r.matched}`,
    r.error ? h("span", {class: "error"}, ` ${r.error}`) : null);
}

export class DeadLetterView extends DeadLettersView {
  enter([id]) {
    this.id = decodeURIComponent(id);
    this.dead = null;
    this.replay = null;
    this.replayDone();
  }

  replayDone() {
    return this.attempt(async () => { this.dead = await api("GET", `/dlq/${encodeURIComponent(this.id)}`); });
  }

  render() {
    const d = this.dead;
    if (!d) return h("div", {}, h("h2", {}, `Dead letter ${this.id}`), this.problem() || h("p", {class: "note"}, "loading…"));
    const replayed = d.replayed_as;
    return h("div", {},
      h("h2", {}, "Dead letter ", h("span", {class: "mono"}, d.id), ` (${d.reason})`, " ",
        h("button", {id: "replay-one", onclick: () => this.startReplay({ids: [d.id], force: Boolean(d.replayed_by)})}, d.replayed_by ? "Replay again" : "Replay")),
      this.problem(), replayProgress(this.replay),
      replayed ? h("p", {}, "replayed as ", jobLink(replayed)) : null,
      h("dl", {class: "fields"}, h("dt", {}, "type"), h("dd", {}, d.type ?? "(poison)"), h("dt", {}, "dead at"), h("dd", {}, dateTime(d.dead_at)),
        h("dt", {}, "from"), h("dd", {class: "mono"}, d.source ? `${d.source.topic}[${d.source.partition}]@${d.source.offset}` : "")),
      h("h2", {}, "Attempts"),
      d.errors.map((e) => h("div", {class: "attempt"}, h("p", {class: "error"}, `attempt ${e.attempt}: ${e.type}: ${e.message}`, e.worker ? ` (${e.worker})` : ""),
        e.traceback ? h("pre", {class: "traceback"}, e.traceback) : null)),
      h("h2", {}, d.job ? "Job" : "Raw record (base64)"), h("pre", {id: "payload"}, d.job ? json(d.job) : d.raw));
  }
}

export class DelayedView extends View {
  enter() {
    this.delayed = null;
    this.every(5000, () => this.load());
  }

  load() {
    return this.attempt(async () => { this.delayed = await api("GET", "/delayed?limit=100"); });
  }

  render() {
    const d = this.delayed;
    if (!d) return h("div", {}, this.problem() || h("p", {class: "note"}, "loading…"));
    return h("div", {},
      h("p", {class: "note"}, `${d.waiting} delayed jobs waiting, ${d.claimed} being fired; the next ${d.items.length} by due time:`),
      this.problem(),
      h("table", {id: "delayed"}, h("thead", {}, h("tr", {}, ["job", "type", "priority", "due", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, d.items.map((j) => h("tr", {"data-job": j.id}, h("td", {}, jobLink(j.id)), h("td", {}, j.type), h("td", {}, j.priority),
          h("td", {}, dateTime(j.due_at)),
          h("td", {}, h("button", {class: "danger", onclick: () => this.attempt(async () => {
            await api("DELETE", `/jobs/${encodeURIComponent(j.id)}`);
            await this.load();
          })}, "Cancel")))))));
  }
}

export class WorkersView extends View {
  enter() {
    this.workers = null;
    this.every(2000, () => this.attempt(async () => {
      const resp = await fetch("/workers", {headers: this.app.gatewayHeaders()});
      const body = await resp.json();
      if (!resp.ok) throw new Error(`${resp.status}: ${body.detail ?? JSON.stringify(body)}`);
      this.workers = body.workers;
    }));
  }

  render() {
    const w = this.workers;
    if (!w) return h("div", {}, this.problem() || h("p", {class: "note"}, "loading…"));
    const now = Date.now();
    return h("div", {},
      h("p", {class: "note"}, `${w.length} workers heard from within the group's session timeout`),
      this.problem(),
      h("table", {id: "workers"}, h("thead", {}, h("tr", {}, ["worker", "app", "running", "buffered", "paused", "partitions", "last heartbeat", "started"].map((c) => h("th", {}, c)))),
        h("tbody", {}, w.map((x) => h("tr", {"data-worker": x.id},
          h("td", {class: "mono"}, x.id), h("td", {}, x.app), h("td", {class: "num"}, `${x.running} / ${x.concurrency}`),
          h("td", {class: "num"}, x.buffered), h("td", {class: "num"}, x.paused),
          h("td", {class: "mono", title: x.partitions.join(" ")}, `${x.partitions.length}: ${x.partitions.slice(0, 6).join(" ")}${x.partitions.length > 6 ? " …" : ""}`),
          h("td", {}, `${((now - x.at) / 1000).toFixed(1)} s ago`), h("td", {}, dateTime(x.started_at)))))));
  }
}
