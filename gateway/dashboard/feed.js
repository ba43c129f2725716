// The live feed: every status event over the gateway's WebSocket, resumed with the last
// cursor after any drop (a gateway restart included), so nothing is missed or repeated.

import {session, wsToken} from "./api.js";

export class Feed {
  constructor(onEvents, onState) {
    this.onEvents = onEvents;
    this.onState = onState;
    this.cursor = null;
    this.delay = 500;
    this.ws = null;
    this.stopped = false;
  }

  async connect() {
    if (this.stopped) return;
    let url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    if (session.config.auth) {
      if (!session.key) return session.onKeyNeeded("");
      try {
        url += `?token=${encodeURIComponent(await wsToken())}`;
      } catch (err) {
        if (err.status === 401 || err.status === 403) return session.onKeyNeeded(err.message);
        return this.retry(`no token (${err.message})`);
      }
    }
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      const sub = this.cursor ? {all: true, cursor: this.cursor} : {all: true};
      ws.send(JSON.stringify({subscribe: sub}));
      this.onState("live");
    };
    ws.onmessage = (msg) => {
      const frame = JSON.parse(msg.data);
      if (frame.events) this.onEvents(frame.events);
      if (frame.cursor) this.cursor = frame.cursor;
      if (frame.error) this.onState(`live (${frame.error})`);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (e.code === 4401 || e.code === 4403) return session.onKeyNeeded(e.reason);
      this.retry(`disconnected (${e.code}${e.reason ? ": " + e.reason : ""})`);
    };
  }

  retry(why) {
    this.onState(`${why}; reconnecting`);
    setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 10_000);
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }
}
