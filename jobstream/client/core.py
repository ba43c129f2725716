"""`Client`: enqueue jobs from an asyncio program, await their results, follow their events,
and handle dead letters, over the API (HTTP) and the gateway (WebSocket).

    async with Client() as client:
        job = await client.submit("images.resize", {"w": 64})
        print(await job.result(timeout=30))

Under trouble it does the right thing without the caller's help:

- **503 and lost connections** are tried again, after `Retry-After` (growing, with
  jitter), until the call's deadline (`retry_for`, per client or per call); then the last
  error is raised (`Unavailable`, `Unreachable`). Only calls safe to send twice are: reads,
  PUT and DELETE, submits (their idempotency key), dry runs; running a schedule now or a
  replay is not sent again.
- **Submits are safe to try again**: each carries an idempotency key (the caller's, or one
  made here), so a submit that reached Kafka before its answer was lost returns the same
  job on the retry instead of a second one. A batch's items carry one each.
- **4xx** raise at once, one class a status (`jobstream.client.errors`), with the API's
  sentence and the fields it named (`InvalidInput.field`).
- One HTTP connection pool and at most one WebSocket for every `result()` awaited at the
  same time (`stream.Watcher`); `aclose()` (or `async with`) closes them.
- An API key (`api_key`, or `JOBSTREAM_API_KEY`) goes with every request when given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from jobstream.client.errors import (
    ApiError,
    Conflict,
    JobCancelled,
    JobExpired,
    JobFailed,
    api_error,
)
from jobstream.client.stream import Watcher, feed
from jobstream.client.transport import RETRY_FOR_S, Transport
from schemas import StatusEvent

Priority = Literal["high", "normal", "low"]


class Job:
    """A submitted job: its `id`, and what the API said on submit (`state`, `run_at`,
    `duplicate`: a repeat of an idempotency key, answered with the first job)."""

    def __init__(self, client: Client, job_id: str, state: str | None = None, run_at: str | None = None,
                 duplicate: bool = False) -> None:  # fmt: skip
        self.client = client
        self.id = job_id
        self.state = state
        self.run_at = run_at
        self.duplicate = duplicate

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.state!r})"

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the API asked for
        """The handler's result once the job completes; raises `JobFailed` (or `JobExpired`)
        if it ends dead, `JobCancelled` if cancelled, `TimeoutError` after `timeout` s."""
        return await self.client.result(self.id, timeout)

    async def status(self) -> dict[str, Any]:
        """The job's latest state (`GET /jobs/{id}`)."""
        return await self.client.status(self.id)

    async def cancel(self) -> str:
        """Ask for the job to be cancelled: `cancelled` (it had not started) or `cancelling`."""
        return await self.client.cancel(self.id)

    def events(self) -> AsyncIterator[StatusEvent]:
        """The job's events from now until it ends."""
        return self.client.events(jobs=[self.id], until_done=True)


class Client:
    """See the module docstring. `api`: the API's base URL; `gateway`: the gateway's
    WebSocket URL; `timeout`: one HTTP request's; `retry_for`: a call's deadline."""

    def __init__(
        self,
        api: str = "http://127.0.0.1:8000",
        gateway: str = "ws://127.0.0.1:8001/ws",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry_for: float = RETRY_FOR_S,
        max_connections: int = 100,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("JOBSTREAM_API_KEY", "").strip() or None
        self._auth = {"authorization": f"Bearer {key}"} if key else {}
        self.api = api.rstrip("/")
        self.gateway = gateway
        self._http = Transport(self.api, self._auth, timeout, retry_for, max_connections)
        self._watcher = Watcher(gateway, lambda: dict(self._auth))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._watcher.aclose()
        await self._http.aclose()

    # -- jobs ----------------------------------------------------------------------------

    async def submit(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: Priority | None = None,
        delay: float | dt.timedelta | None = None,
        run_at: dt.datetime | None = None,
        key: str | None = None,
        then: Sequence[dict[str, Any]] | None = None,
        idempotency_key: str | None = None,
        deadline: float | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue one job. `delay` (seconds) or `run_at` (an aware datetime) makes it wait;
        `options` are the API's other fields (`max_attempts`, `timeout_s`, `backoff`,
        `ttl_ms`, `expires_at`). Tries again through 503s until `deadline` s (the client's
        `retry_for` by default), the same idempotency key each time."""
        body = job_body(type, payload, priority=priority, delay=delay, run_at=run_at, key=key, then=then,
                        **options)  # fmt: skip
        body["idempotency_key"] = idempotency_key or _new_key()
        answer = await self._call("POST", "/jobs", body, deadline, retry=True)  # the key makes it safe
        return Job(
            self, answer["id"], answer.get("state"), answer.get("run_at"), bool(answer.get("duplicate"))
        )

    async def submit_many(
        self, jobs: Sequence[dict[str, Any]], *, deadline: float | None = None
    ) -> list[Job | ApiError]:
        """Enqueue many jobs in one request (each a dict of `submit`'s fields, `type` first):
        per item, in order, a `Job` or the `ApiError` that item got (403, 409, 413, 422)."""
        items = []
        for spec in jobs:
            fields = dict(spec)
            item = job_body(fields.pop("type"), fields.pop("payload", None), **fields)
            item.setdefault("idempotency_key", _new_key())
            items.append(item)
        answer = await self._call("POST", "/jobs/batch", {"jobs": items}, deadline, retry=True)
        out: list[Job | ApiError] = []
        for row in answer["results"]:
            if "error" in row:
                error = row["error"]
                out.append(api_error(int(error["status"]), {"detail": error["message"], **error}))
            else:
                out.append(
                    Job(self, row["id"], row.get("state"), row.get("run_at"), bool(row.get("duplicate")))
                )
        return out

    def job(self, job_id: str) -> Job:
        """A handle on a job submitted elsewhere."""
        return Job(self, job_id)

    def _job(self, answer: dict[str, Any]) -> Job:
        return Job(
            self, answer["id"], answer.get("state"), answer.get("run_at"), bool(answer.get("duplicate"))
        )

    async def status(self, job_id: str, deadline: float | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("GET", f"/jobs/{_quote(job_id)}", None, deadline)
        return answer

    async def cancel(self, job_id: str, deadline: float | None = None) -> str:
        """`cancelled` (it had not started, or a cancel sent before this one's lost answer took
        effect) or `cancelling` (the workers are told); `Conflict` if it ended otherwise."""
        try:
            answer = await self._call("DELETE", f"/jobs/{_quote(job_id)}", None, deadline)
        except Conflict as exc:
            if exc.body.get("state") == "cancelled":
                return "cancelled"
            raise
        return str(answer["state"])

    async def result(self, job_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - as Job's
        """See `Job.result`."""
        async with asyncio.timeout(timeout):
            final = await self._watcher.wait(job_id)
        state = final.get("state")
        if state == "completed":
            return final.get("result")
        if state == "cancelled":
            raise JobCancelled(job_id)
        if final.get("reason") == "expired":
            raise JobExpired(job_id, final)
        raise JobFailed(job_id, final)

    async def events(
        self,
        *,
        types: Sequence[str] = (),
        jobs: Sequence[str] = (),
        all: bool = False,
        until_done: bool = False,
    ) -> AsyncIterator[StatusEvent]:
        """Status events (of these job types, these jobs, or `all`) as they happen, in order,
        from the moment the gateway has the subscription (jobs named in `jobs` start from
        their current state), for as long as the caller reads (with `until_done`, until each
        job in `jobs` ended).
        The connection is opened again from the last event's cursor when it drops: no event
        is missed or repeated."""
        left = set(jobs)
        selection = {"types": list(types), "jobs": list(jobs), "all": all}
        async for raw in feed(self.gateway, lambda: dict(self._auth), selection):
            event = StatusEvent.model_validate(raw)
            yield event
            if until_done and event.state.value in ("completed", "dead", "cancelled"):
                left.discard(event.job_id)
                if not left:
                    return

    # -- dead letters --------------------------------------------------------------------

    async def dead_letters(
        self, *, limit: int = 50, cursor: str | None = None, **filters: Any
    ) -> dict[str, Any]:
        """A page of dead letters, newest first: `{"items", "next_cursor"}`. Filters as the
        API's: `type`, `reason` (a value or a list), `since`, `until`, `q`."""
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {}), **filters}
        page: dict[str, Any] = await self._call("GET", "/dlq", None, None, params)
        return page

    async def dead_letter(self, dead_id: str) -> dict[str, Any]:
        """One dead letter in full: the job and every attempt's error with its traceback."""
        found: dict[str, Any] = await self._call("GET", f"/dlq/{_quote(dead_id)}", None, None)
        return found

    async def replay(self, *, dry_run: bool = True, **request: Any) -> dict[str, Any]:
        """Count (dry run, the default) or replay dead letters: `types`, `reasons`, `ids`,
        `since`, `until`, `q`, `priority`, `rate`, `force`. A replay answers `{"replay_id",
        "matched"}`; follow it with `replay_status`."""
        body = {**request, "dry_run": dry_run}
        # a dry run only counts; a replay claims each record once, but `force` would not
        answer: dict[str, Any] = await self._call("POST", "/dlq/replay", body, None, retry=dry_run)
        return answer

    async def replay_status(self, replay_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("GET", f"/dlq/replays/{_quote(replay_id)}", None, None)
        return found

    # -- the one way requests are made ---------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                      deadline: float | None = None, retry: bool | None = None) -> Any:  # fmt: skip
        """Any API call (`path` from the root, e.g. `/queues`), with the client's errors and
        its retries (GET, PUT and DELETE; a POST only with `retry=True`); the parsed answer."""
        return await self._call(method, path, body, deadline, params, retry=retry)

    async def exchange(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        deadline: float | None = None,
        retry: bool | None = None,
    ) -> tuple[int, Any]:
        """As `request`, with the answer's status: (status, parsed answer)."""
        return await self._http.exchange(method, path, body, deadline, params, retry=retry)

    async def _call(
        self, method: str, path: str, body: Any, deadline: float | None, params: dict[str, Any] | None = None,
        *, retry: bool | None = None,
    ) -> Any:  # fmt: skip
        return (await self._http.exchange(method, path, body, deadline, params, retry=retry))[1]


def job_body(
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    priority: Priority | None = None,
    delay: float | dt.timedelta | None = None,
    run_at: dt.datetime | None = None,
    key: str | None = None,
    then: Sequence[dict[str, Any]] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A job's body as the API takes it, from `submit`'s arguments."""
    body: dict[str, Any] = {"type": type, **({"payload": payload} if payload is not None else {})}
    if priority is not None:
        body["priority"] = priority
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
        body["delay_ms"] = round(seconds * 1000)
    if run_at is not None:
        body["run_at"] = run_at.isoformat()
    if key is not None:
        body["key"] = key
    if then:
        body["then"] = list(then)
    body.update(options)
    return body


def _new_key() -> str:
    return f"client-{uuid.uuid4().hex}"


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")
