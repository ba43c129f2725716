// The API (its address comes from the gateway's /dashboard/config.json) and the key.

const KEY = "jobstream.key";

export const session = {
  config: {api: "", auth: false},
  key: sessionStorage.getItem(KEY) || "",
  onKeyNeeded: (why) => {},  // set by app.js
};

export class ApiError extends Error {
  constructor(status, body) {
    super(`${status}: ${typeof body === "object" && body ? body.detail ?? JSON.stringify(body) : body}`);
    this.status = status;
    this.body = body;
  }
}

export async function loadConfig() {
  const resp = await fetch("/dashboard/config.json");
  session.config = await resp.json();
}

export function useKey(key) {
  session.key = key;
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  return session.key ? {...extra, authorization: `Bearer ${session.key}`} : extra;
}

async function answer(resp) {
  const type = resp.headers.get("content-type") || "";
  const body = type.includes("json") ? await resp.json() : await resp.text();
  if (resp.status === 401) session.onKeyNeeded(body.detail || "the API asks for a key");
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// One request to the API: the parsed body, or an ApiError saying what it answered.
export async function api(method, path, body) {
  const init = {method, headers: headers(body === undefined ? {} : {"content-type": "application/json"})};
  if (body !== undefined) init.body = JSON.stringify(body);
  return answer(await fetch(session.config.api + path, init));
}

// A one-time token for the WebSocket, from the gateway (this page's origin).
export async function wsToken() {
  const body = await answer(await fetch("/ws-token", {method: "POST", headers: headers()}));
  return body.token;
}
