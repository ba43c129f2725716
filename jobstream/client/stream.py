"""The client's two uses of the gateway's WebSocket (`/ws`, protocol: `gateway.protocol`).

- `feed()`: every event of a selection, in order, as the gateway sends them; a dropped
  connection is opened again from the last cursor received (the `subscribed` frame's at
  first, then each events frame's), so nothing is missed and nothing comes twice. Jobs
  subscribed by id start with their current state (the gateway's snapshot, as an event
  marked `snapshot`), so a job that ended before it was followed is seen to have ended.
- `Watcher`: one connection for every job a program awaits (`Job.result()`), however many:
  it subscribes to their ids in as few messages as it can, paced below the gateway's limit
  on a client's messages (the gateway answers each with
  the jobs' current state, so a job that ended before it was watched is seen at once), and
  resolves each waiter when its job reaches `completed`, `dead` or `cancelled`. A dropped
  connection is opened again and every id still awaited subscribed again.

4401 and 4403 (no key, or a key without `read`) end both with `Unauthorized` or
`Forbidden`: retrying would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from jobstream.client.errors import Forbidden, Unauthorized
from jobstream.throttle import Throttle
from schemas import TERMINAL_STATES

log = logging.getLogger("jobstream.client")

BACKOFF_MAX_S = 5.0
IDS_PER_MESSAGE = 5_000  # the gateway takes up to 10,000 ids a message
FINAL_KEPT = 10_000
# below the gateway's default limit on a client's messages (a burst of 100, then 20 a second)
PACE_PER_S, PACE_BURST = 15.0, 80
DROP_EVERY_S = 5.0  # ids no longer awaited are unsubscribed together, this often
LINGER_S = 10.0  # a watcher with nothing to watch keeps its connection this long
_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
_REFUSED = {4401: Unauthorized, 4403: Forbidden}


async def feed(
    url: str, headers: Callable[[], dict[str, str]], selection: dict[str, Any]
) -> AsyncGenerator[dict[str, Any], None]:
    """The events of `selection` (`{"jobs", "types", "all"}`), for as long as the caller reads."""
    cursor: str | None = None
    backoff = 0.1
    while True:
        try:
            async with _connect(url, headers()) as ws:
                first = cursor is None  # a resumed feed has seen the jobs' states already
                sub = {**selection, **({"cursor": cursor} if cursor else {})}
                await ws.send(orjson.dumps({"subscribe": sub}).decode())
                async for raw in ws:
                    frame = orjson.loads(raw)
                    if "events" in frame:
                        for event in frame["events"]:
                            yield event
                        cursor = frame["cursor"]
                    elif "snapshot" in frame and first:
                        for state in frame["snapshot"]:  # where each job stands: it may have ended
                            yield as_event(state)
                    elif "subscribed" in frame:
                        cursor = cursor or frame["cursor"]
                        backoff = 0.1
                    elif frame.get("code") == "replay_failed":  # a gap: ask again from the cursor
                        log.info("the gateway could not replay from the cursor; asking again")
                        break
                    elif "error" in frame:
                        _raise_for(frame)
        except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
            _raise_if_refused(exc)
            log.info("event feed lost (%r); again from the last cursor in %.1fs", exc, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)


class Watcher:
    """See the module docstring. `wait()` returns the job's terminal state (a snapshot's job
    state, or the terminal event: both carry `state`, `result`, `error`, `reason`)."""

    def __init__(self, url: str, headers: Callable[[], dict[str, str]]) -> None:
        self._url = url
        self._headers = headers
        self._waiting: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._add: set[str] = set()
        self._drop: set[str] = set()
        self._changed = asyncio.Event()
        self._final: OrderedDict[str, dict[str, Any]] = OrderedDict()  # the last jobs seen to end
        self._task: asyncio.Task[None] | None = None

    async def wait(self, job_id: str) -> dict[str, Any]:
        if (known := self._final.get(job_id)) is not None:
            return known
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(job_id, set())
        if not waiters:
            self._add.add(job_id)
            self._drop.discard(job_id)
            self._changed.set()
        waiters.add(fut)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="jobstream-watcher")
        try:
            return await fut
        finally:
            waiters.discard(fut)
            if not waiters and self._waiting.get(job_id) is waiters:
                del self._waiting[job_id]
                self._add.discard(job_id)
                self._drop.add(job_id)
                self._changed.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        backoff = 0.1
        while self._waiting:
            try:
                async with _connect(self._url, self._headers()) as ws:
                    self._add, self._drop = set(self._waiting), set()
                    backoff = 0.1
                    reader = asyncio.create_task(self._read(ws))
                    try:
                        await self._write(ws, reader)
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await reader
                continue  # closed as idle, or by the gateway: again if anything is awaited
            except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
                try:
                    _raise_if_refused(exc)
                except (Unauthorized, Forbidden) as refused:
                    self._fail_all(refused)
                    return
                log.info("job watcher lost its connection (%r); again in %.1fs", exc, backoff)
            except Exception as exc:  # a bad gateway URL, a frame not understood: every waiter hears
                self._fail_all(exc)
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _write(self, ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        """Send what changed in the set of awaited ids, batched and paced below the gateway's
        message limit (new ids at once while the pace allows, the ids no longer awaited every
        `DROP_EVERY_S`); return once nothing has been awaited for `LINGER_S` (or the
        connection ended)."""
        loop = asyncio.get_running_loop()
        pace = Throttle(PACE_PER_S, PACE_BURST, time.monotonic())
        dropped_at = loop.time()
        while True:
            self._changed.clear()
            if self._add:
                add, self._add = sorted(self._add), set()
                for i in range(0, len(add), IDS_PER_MESSAGE):
                    await _paced(pace)
                    await ws.send(
                        orjson.dumps({"subscribe": {"jobs": add[i : i + IDS_PER_MESSAGE]}}).decode()
                    )
            if self._drop and (
                loop.time() - dropped_at >= DROP_EVERY_S or len(self._drop) >= IDS_PER_MESSAGE
            ):
                drop, self._drop = sorted(self._drop), set()
                dropped_at = loop.time()
                for i in range(0, len(drop), IDS_PER_MESSAGE):
                    await _paced(pace)
                    await ws.send(
                        orjson.dumps({"unsubscribe": {"jobs": drop[i : i + IDS_PER_MESSAGE]}}).decode()
                    )
            changed = asyncio.create_task(self._changed.wait())
            idle = DROP_EVERY_S if self._drop else None if self._waiting else LINGER_S
            done, _ = await asyncio.wait({changed, reader}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if reader in done:
                reader.result()  # raises why the connection ended
                return
            if not done and not self._waiting and not self._drop:
                return  # idle: the next wait opens a connection again
            await asyncio.sleep(0.005)  # let a burst of new waits gather into one message

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = orjson.loads(raw)
            if "snapshot" in frame:
                for state in frame["snapshot"]:
                    self._ended(state["id"], state)
            elif "events" in frame:
                for event in frame["events"]:
                    self._ended(event["job_id"], event)
            elif "error" in frame and frame.get("code") not in (None, "snapshot_unavailable"):
                log.warning("the gateway refused a subscription: %s", frame["error"])

    def _ended(self, job_id: str, state: dict[str, Any]) -> None:
        if state.get("state") not in _TERMINAL:
            return
        # kept: a job awaited again (after a timeout) may have ended while still subscribed
        self._final[job_id] = state
        if len(self._final) > FINAL_KEPT:
            self._final.popitem(last=False)
        for fut in self._waiting.get(job_id, ()):
            if not fut.done():
                fut.set_result(state)

    def _fail_all(self, exc: Exception) -> None:
        for waiters in self._waiting.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)


async def _paced(throttle: Throttle) -> None:
    """Return once `throttle` gives a token, sleeping until it has one."""
    while not throttle.take(time.monotonic()):  # noqa: ASYNC110 - waiting for time, not an event
        await asyncio.sleep(throttle.wait_s())


def as_event(state: dict[str, Any]) -> dict[str, Any]:
    """A job's state (a snapshot's, `GET /jobs/{id}`'s shape) as the event that brought it
    there, marked `snapshot`: a job followed from now starts from where it stands."""
    event = {"job_id": state["id"], "type": state.get("type", ""), "state": state["state"],
             "attempt": state.get("attempt", 1), "at": state.get("updated_at", 0),
             "snapshot": True}  # fmt: skip
    for name in ("progress", "result", "error", "reason", "parent_id"):
        if state.get(name) is not None:
            event[name] = state[name]
    return event


def _connect(url: str, headers: dict[str, str]) -> Any:
    return connect(url, additional_headers=headers, max_size=None, open_timeout=10, ping_interval=20)


def _raise_if_refused(exc: BaseException) -> None:
    """Raise `Unauthorized` or `Forbidden` when the gateway refused the key (a close with
    4401 or 4403, or the handshake answered 401 or 403)."""
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None and exc.rcvd.code in _REFUSED:
        raise _REFUSED[exc.rcvd.code](exc.rcvd.code, {"detail": exc.rcvd.reason}) from exc
    if isinstance(exc, InvalidStatus) and (status := exc.response.status_code) in (401, 403):
        raise _REFUSED[4000 + status](status, {"detail": str(exc)}) from exc


def _raise_for(frame: dict[str, Any]) -> None:
    if frame.get("code") == "forbidden":
        raise Forbidden(403, {"detail": frame["error"]})
    log.warning("the gateway said: %s", frame["error"])
