// The dashboard: routes (#/queues, #/jobs, #/jobs/<id>, #/dlq, #/dlq/<id>, #/delayed,
// #/schedules, #/schedules/<name>, #/workers),
// the key (asked for when the API or the gateway wants one, kept for this tab only), the
// live feed, and rendering at most once per animation frame however fast events arrive (and
// for the feed's events, at most every 100 ms).

import {loadConfig, session, useKey} from "./api.js";
import {Feed} from "./feed.js";
import {ScheduleView, SchedulesView} from "./schedules.js";
import {Store} from "./store.js";
import {DeadLetterView, DeadLettersView, DelayedView, JobView, JobsView, QueuesView, WorkersView} from "./views.js";

const LIVE_EVERY_MS = 100;  // the live feed redraws the page at most this often

const ROUTES = [
  [/^#\/jobs\/(.+)$/, JobView, "jobs"],
  [/^#\/jobs$/, JobsView, "jobs"],
  [/^#\/dlq\/(.+)$/, DeadLetterView, "dlq"],
  [/^#\/dlq$/, DeadLettersView, "dlq"],
  [/^#\/delayed$/, DelayedView, "delayed"],
  [/^#\/schedules\/(.+)$/, ScheduleView, "schedules"],
  [/^#\/schedules$/, SchedulesView, "schedules"],
  [/^#\/workers$/, WorkersView, "workers"],
  [/^#\/queues$/, QueuesView, "queues"],
];

class App {
  constructor() {
    this.store = new Store();
    this.view = null;
    this.dirty = false;
    this.renderedAt = 0;
    this.feed = new Feed((events) => { this.store.apply(events); this.changed(LIVE_EVERY_MS); }, (state) => this.connection(state));
  }

  async start() {
    await loadConfig();
    session.onKeyNeeded = (why) => this.askForKey(why);
    document.getElementById("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      useKey(document.getElementById("login-key").value.trim());
      document.getElementById("login").hidden = true;
      document.getElementById("view").hidden = false;
      this.route();
      this.feed.connect();
    });
    const forget = document.getElementById("forget");
    forget.hidden = !session.config.auth;
    forget.addEventListener("click", () => { useKey(""); this.askForKey(""); });
    window.addEventListener("hashchange", () => this.route());
    setInterval(() => this.changed(), 1000);  // sparklines move on with time
    if (session.config.auth && !session.key) return this.askForKey("");
    this.route();
    this.feed.connect();
  }

  askForKey(why) {
    document.getElementById("login").hidden = false;
    document.getElementById("view").hidden = true;
    document.getElementById("login-error").textContent = why || "";
    this.connection("a key is needed");
  }

  connection(state) {
    const el = document.getElementById("conn");
    el.textContent = state;
    el.dataset.state = state === "live" ? "live" : "down";
  }

  // Headers for the gateway's own HTTP routes (the key, when one is needed).
  gatewayHeaders() {
    return session.key ? {authorization: `Bearer ${session.key}`} : {};
  }

  go(hash) {
    location.hash = hash;
  }

  route() {
    const hash = location.hash || "#/queues";
    for (const [pattern, View, tab] of ROUTES) {
      const m = hash.match(pattern);
      if (!m) continue;
      if (this.view) this.view.leave();
      this.view = new View(this);
      this.view.enter(m.slice(1));
      for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.view === tab);
      this.changed();
      return;
    }
    this.go("#/queues");
  }

  // Something the page shows changed: render in the next frame (once, however many changes),
  // or, for the live feed's changes, no sooner than `every` ms after the last render: at
  // thousands of events a second a table redrawn 60 times a second costs the page its frames.
  changed(every = 0) {
    if (this.dirty) return;
    this.dirty = true;
    const wait = Math.max(0, this.renderedAt + every - performance.now());
    const frame = () => requestAnimationFrame(() => {
      this.dirty = false;
      this.renderedAt = performance.now();
      if (!this.view || document.getElementById("view").hidden) return;
      const main = document.getElementById("view");
      const focused = document.activeElement?.id;
      main.replaceChildren(this.view.render());
      if (focused) document.getElementById(focused)?.focus();
    });
    if (wait > 0) setTimeout(frame, wait);
    else frame();
  }
}

new App().start();
