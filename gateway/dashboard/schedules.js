// Recurring schedules: the list (#/schedules) with each one's next runs and its buttons, and
// a schedule's page (#/schedules/<name>) with its spec and last runs.

import {api} from "./api.js";
import {dateTime, h, json} from "./dom.js";
import {View, jobLink, stateCell} from "./views.js";

const path = (name) => `/schedules/${encodeURIComponent(name)}`;

function when(s) {
  return s.cron ? `${s.cron} (${s.tz})` : `every ${s.every_ms / 1000} s`;
}

// Pause or resume, run now, delete: each reloads the page's data once done.
function actions(view, s) {
  const act = (label, method, suffix, cls) => h("button", {class: cls, onclick: () => view.attempt(async () => {
    const r = await api(method, path(s.name) + suffix);
    if (suffix === "/run") view.fired = r.job_id;
    if (method === "DELETE" && view instanceof ScheduleView) view.app.go("#/schedules");
    else await view.load();
  })}, label);
  return [
    s.state === "paused" ? act("Resume", "POST", "/resume") : act("Pause", "POST", "/pause"),
    " ", act("Run now", "POST", "/run"), " ", act("Delete", "DELETE", "", "danger"),
  ];
}

function fired(view) {
  return view.fired ? h("p", {class: "note", id: "fired"}, "fired ", jobLink(view.fired)) : null;
}

export class SchedulesView extends View {
  enter() {
    this.page = null;
    this.fired = "";
    this.every(5000, () => this.load());
  }

  load() {
    return this.attempt(async () => { this.page = await api("GET", "/schedules?limit=1000"); });
  }

  render() {
    const p = this.page;
    if (!p) return h("div", {}, this.problem() || h("p", {class: "note"}, "loading…"));
    return h("div", {},
      h("p", {class: "note"}, `${p.items.length} schedules${p.next_cursor ? " (the first 1000)" : ""}; create one with PUT /schedules/{name}`),
      this.problem(), fired(this),
      h("table", {id: "schedules"}, h("thead", {}, h("tr", {}, ["name", "state", "when", "type", "next run", "fired", "missed", "last run", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, p.items.map((s) => h("tr", {"data-schedule": s.name},
          h("td", {}, h("a", {href: `#${path(s.name)}`, class: "mono"}, s.name)), stateCell(s.state), h("td", {class: "mono"}, when(s)),
          h("td", {}, s.type), h("td", {}, dateTime(s.next_run_at)), h("td", {class: "num"}, s.fired), h("td", {class: "num"}, s.missed),
          h("td", {}, dateTime(s.last_run_at)), h("td", {}, actions(this, s)))))));
  }
}

export class ScheduleView extends View {
  enter([name]) {
    this.name = decodeURIComponent(name);
    this.schedule = null;
    this.fired = "";
    this.every(3000, () => this.load());
  }

  load() {
    return this.attempt(async () => { this.schedule = await api("GET", path(this.name)); });
  }

  render() {
    const s = this.schedule;
    if (!s) return h("div", {}, h("h2", {}, `Schedule ${this.name}`), this.problem() || h("p", {class: "note"}, "loading…"));
    return h("div", {},
      h("h2", {}, "Schedule ", h("span", {class: "mono"}, s.name), " ", h("span", {class: s.state, id: "schedule-state"}, s.state), " ", actions(this, s)),
      this.problem(), fired(this),
      h("dl", {class: "fields"},
        h("dt", {}, "when"), h("dd", {class: "mono"}, when(s)),
        h("dt", {}, "type"), h("dd", {}, s.type),
        h("dt", {}, "next runs"), h("dd", {id: "next-runs"}, s.next_runs.join(", ") || "none"),
        h("dt", {}, "fired"), h("dd", {}, `${s.fired}${s.limit ? ` of ${s.limit}` : ""}`),
        h("dt", {}, "missed"), h("dd", {}, `${s.missed} (catch_up ${s.catch_up})`)),
      h("h2", {}, "Last runs"),
      h("table", {id: "runs"}, h("thead", {}, h("tr", {}, ["occurrence", "job", "state", "fired at"].map((c) => h("th", {}, c)))),
        h("tbody", {}, s.runs.slice().reverse().map((r) => h("tr", {"data-job": r.job_id},
          h("td", {}, dateTime(r.occurrence_at), r.manual ? " (run now)" : ""), h("td", {}, jobLink(r.job_id)),
          stateCell(r.state ?? "unknown"), h("td", {}, dateTime(r.fired_at)))))),
      h("h2", {}, "Spec"), h("pre", {id: "spec"}, json(s.spec)));
  }
}
