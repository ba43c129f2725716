"""`jobstream submit TYPE PAYLOAD [--priority P] [--api URL] [--wait]`, and the HTTP calls
of every command: through the Python client (`jobstream.client`: its key, its retries
through a brief outage, an idempotency key on each submit).

With `--wait` it follows the job on the gateway's WebSocket: subscribe to the id, print the
snapshot (the state the job already reached: it may have run before we subscribed), then
each event, until a terminal state. If the gateway cannot be reached it polls
`GET /jobs/{id}` on the API instead, with backoff. With `JOBSTREAM_API_KEY` set, every request
and the WebSocket carry it (`Authorization: Bearer`). Exit codes: 0 submitted (or, with
`--wait`, completed); 1 the job ended dead or cancelled, or the API refused it; 2 bad
arguments or the API unreachable; 3 `--timeout` passed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from schemas import TERMINAL_STATES

if TYPE_CHECKING:
    from jobstream.client import SyncClient

CLI_RETRY_S = 5.0
_clients: dict[str, SyncClient] = {}


class Unreachable(Exception):
    """The API did not answer at all (refused, DNS, timeout)."""


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def auth_headers() -> dict[str, str]:
    """`Authorization` with the key in `JOBSTREAM_API_KEY`, when it is set."""
    key = os.environ.get("JOBSTREAM_API_KEY", "").strip()
    return {"authorization": f"Bearer {key}"} if key else {}


def api_client(api: str) -> SyncClient:
    """The Python client (`jobstream.client`) for the API at `api`: one per address for the
    process, closed at exit. It carries `JOBSTREAM_API_KEY`, and tries again through an
    outage of up to `CLI_RETRY_S` before the command says what is wrong."""
    client = _clients.get(api)
    if client is None:
        from jobstream.client import SyncClient

        client = _clients[api] = SyncClient(api, retry_for=CLI_RETRY_S)
        atexit.register(client.close)
    return client


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One JSON request through the client; returns (status, parsed body). HTTP errors are
    returned, not raised; no answer at all raises `Unreachable`."""
    from jobstream.client import ApiError
    from jobstream.client import Unreachable as NoAnswer

    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        return api_client(f"{parts.scheme}://{parts.netloc}").exchange(method, path, body)
    except ApiError as exc:
        return exc.status, exc.body
    except NoAnswer as exc:
        raise Unreachable(f"cannot reach the API at {url}: {exc}") from None


def call_api(command: Callable[[argparse.Namespace, str], int], args: argparse.Namespace) -> int:
    """Run a subcommand against `args.api`; its exit code, 2 when the API is unreachable, 130
    on Ctrl-C."""
    try:
        return command(args, str(args.api).rstrip("/"))
    except Unreachable as exc:
        print(f"error: {exc}\n  is the API running?", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _detail(status: int, body: Any) -> str:
    if isinstance(body, dict):
        msg = str(body.get("detail", body))
        for e in body.get("errors") or []:
            if isinstance(e, dict):
                msg += f"\n  {e.get('field', '?')}: {e.get('message', e)}"
        return f"the API answered {status}: {msg}"
    return f"the API answered {status}: {body}"


class Printer:
    """Prints each new state of one job once; knows when the job is over."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.last: tuple[Any, ...] | None = None
        self.final: str | None = None

    def show(self, item: Any) -> None:
        if not isinstance(item, dict) or self.final is not None:
            return
        if item.get("job_id", item.get("id", self.job_id)) != self.job_id:
            return
        state, attempt = str(item.get("state", "")), item.get("attempt", 1)
        key = (state, attempt, json.dumps(item.get("progress"), sort_keys=True))
        if not state or key == self.last:
            return
        self.last = key
        parts = [datetime.now().strftime("%H:%M:%S.%f")[:-3], f"{state:<9}", f"attempt {attempt}"]
        if (p := item.get("progress")) and state == "progress":
            parts.append(f"{p.get('percent', '?')}% {p.get('message') or ''}".rstrip())
        if (e := item.get("error")) and state in ("failed", "retrying", "dead"):
            text = f"{e.get('type', 'Error')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
            parts.append(text)
        if state == "completed" and item.get("result") is not None:
            parts.append(f"result {json.dumps(item['result'])[:500]}")
        print("  ".join(parts), flush=True)
        if state in TERMINAL_STATES:
            self.final = state


def _poll_once(api: str, printer: Printer) -> None:
    status, body = request("GET", f"{api}/jobs/{printer.job_id}")
    if status == 200:
        printer.show(body)
    elif status != 404:  # 404: the projection has not seen the job yet
        raise Unreachable(_detail(status, body))


def follow_ws(gateway: str, api: str, printer: Printer, deadline: float) -> None:
    """Follow over the WebSocket until the job ends or `deadline` (monotonic) passes."""
    with connect(gateway, open_timeout=5, close_timeout=2, additional_headers=auth_headers()) as ws:
        ws.send(json.dumps({"subscribe": {"jobs": [printer.job_id]}}))
        while printer.final is None and time.monotonic() < deadline:
            try:
                frame = json.loads(ws.recv(timeout=min(5.0, max(0.1, deadline - time.monotonic()))))
            except TimeoutError:
                # Quiet for a while: ask the API, which also closes any gap between the
                # submit and the subscription. The WebSocket stays the source: an API that
                # is down (e.g. stopped first on shutdown) is no reason to give up.
                with contextlib.suppress(Unreachable):
                    _poll_once(api, printer)
                continue
            if isinstance(frame, dict):
                for item in [*(frame.get("snapshot") or []), *(frame.get("events") or [])]:
                    printer.show(item)


def follow_poll(api: str, printer: Printer, deadline: float) -> None:
    delay = 0.1
    while printer.final is None and time.monotonic() < deadline:
        _poll_once(api, printer)
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def submit_cli(args: argparse.Namespace) -> int:
    """Submit one job, print its id, and with `--wait` print its states until it ends."""
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        _err(f"PAYLOAD is not valid JSON: {exc}")
        return 2
    if not isinstance(payload, dict):
        _err("PAYLOAD must be a JSON object, e.g. '{\"n\": 1}'")
        return 2
    from jobstream.client import ApiError
    from jobstream.client import Unreachable as NoAnswer

    api = str(args.api).rstrip("/")
    try:
        job = api_client(api).submit(args.type, payload, priority=args.priority)
    except NoAnswer as exc:
        _err(f"cannot reach the API: {exc}\n  is the API running? (`make run` starts it on {api})")
        return 2
    except ApiError as exc:
        _err(_detail(exc.status, exc.body))
        if exc.status == 503:
            print("  a backing service (Kafka or Redis) is down; retry later", file=sys.stderr)
        return 1
    answer = {"id": job.id, "state": job.state}
    print(answer["id"], flush=True)
    if not args.wait:
        return 0
    timeout = getattr(args, "timeout", None)
    deadline = time.monotonic() + (timeout if timeout else float("inf"))
    gateway = getattr(args, "gateway", None) or "ws://127.0.0.1:8001/ws"
    printer = Printer(str(answer["id"]))
    printer.show({"id": printer.job_id, "state": answer.get("state", "queued"), "attempt": 1})
    try:
        try:
            follow_ws(gateway, api, printer, deadline)
        except (OSError, WebSocketException) as exc:
            print(f"(gateway {gateway} unavailable: {exc}; polling the API)", file=sys.stderr)
            follow_poll(api, printer, deadline)
    except Unreachable as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    if printer.final is None:
        _err(f"job {printer.job_id} did not end within {timeout}s")
        return 3
    return 0 if printer.final == "completed" else 1
