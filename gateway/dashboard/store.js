// What the live feed has shown: each job's latest state (the newest `MAX_JOBS`), counts
// per state, its events while the page is open, and per-second rates for sparklines.

export const STATES = ["scheduled", "queued", "active", "completed", "retrying", "failed", "dead", "cancelled", "replayed"];
const MAX_JOBS = 20_000;
const EVENTS_PER_JOB = 50;
const SECONDS = 120;
const ORDER_KEPT = 5_000;

export class Store {
  constructor() {
    this.jobs = new Map();  // id -> latest event, least recently changed first
    this.events = new Map();  // id -> its events seen here, oldest first
    this.counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    this.types = new Set();
    this.order = [];  // job ids as their events came, newest last (trimmed; ids repeat)
    this.total = 0;
    this.rates = {events: [], completed: [], failed: [], waitSum: [], waitCount: []};
    for (const series of Object.values(this.rates)) for (let i = 0; i < SECONDS; i++) series.push(0);
    this.second = Math.floor(Date.now() / 1000);
  }

  apply(events) {
    this.tick();
    for (const ev of events) {
      const state = ev.state === "progress" ? "active" : ev.state;
      const prev = this.jobs.get(ev.job_id);
      if (prev !== undefined) {
        this.counts[prev._state] -= 1;
        this.jobs.delete(ev.job_id);
      }
      this.jobs.set(ev.job_id, {...prev, ...ev, _state: state});
      this.counts[state] = (this.counts[state] || 0) + 1;
      if (this.jobs.size > MAX_JOBS) {
        const [oldest, gone] = this.jobs.entries().next().value;
        this.jobs.delete(oldest);
        this.events.delete(oldest);
        this.counts[gone._state] -= 1;
      }
      const seen = this.events.get(ev.job_id) || [];
      seen.push(ev);
      if (seen.length > EVENTS_PER_JOB) seen.shift();
      this.events.set(ev.job_id, seen);
      if (ev.type) this.types.add(ev.type);
      this.order.push(ev.job_id);
      const last = SECONDS - 1;
      this.rates.events[last] += 1;
      if (state === "completed") this.rates.completed[last] += 1;
      if (state === "failed" || state === "dead") this.rates.failed[last] += 1;
      if (ev.state === "active" && typeof ev.wait_ms === "number") {
        this.rates.waitSum[last] += ev.wait_ms;
        this.rates.waitCount[last] += 1;
      }
    }
    this.total += events.length;
    if (this.order.length > 2 * ORDER_KEPT) this.order.splice(0, this.order.length - ORDER_KEPT);
  }

  // Move the per-second series on to now.
  tick() {
    const now = Math.floor(Date.now() / 1000);
    const steps = Math.min(now - this.second, SECONDS);
    if (steps <= 0) return;
    for (const series of Object.values(this.rates)) {
      series.splice(0, steps);
      for (let i = 0; i < steps; i++) series.push(0);
    }
    this.second = now;
  }

  // Mean queue wait (ms) per second: 0 for a second in which no job started.
  waits() {
    return this.rates.waitSum.map((sum, i) => (this.rates.waitCount[i] ? Math.round(sum / this.rates.waitCount[i]) : 0));
  }

  // The newest jobs matching `keep`, at most `limit`: from the recent ids first (cheap at
  // any rate), from every job kept only when those are too few (a rare type or state).
  recent(keep, limit) {
    const out = [];
    const seen = new Set();
    for (let i = this.order.length - 1; i >= 0 && out.length < limit; i--) {
      const id = this.order[i];
      if (seen.has(id)) continue;
      seen.add(id);
      const job = this.jobs.get(id);
      if (job !== undefined && keep(job)) out.push(job);
    }
    if (out.length >= limit || seen.size >= this.jobs.size) return out;
    const all = [...this.jobs.values()];
    for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
      if (!seen.has(all[i].job_id) && keep(all[i])) out.push(all[i]);
    }
    return out;
  }
}
