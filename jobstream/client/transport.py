"""The client's HTTP: one pooled `aiohttp.ClientSession`, and the loop that tries a call
again through 503s and lost connections until its deadline.

A 503 is tried again after its `Retry-After` (at least the growing pause: 0.1 s, doubling
to 2 s; each with +-20 % jitter so many clients do not come back at once); a connection
refused, reset or timed out after the pause. Every other 4xx or 5xx raises at once. When
the next try would pass the deadline, the last error is raised: `Unavailable` (naming the
service) or `Unreachable`.

aiohttp, not httpx: a request costs the caller about 80 us of CPU against httpx's 1.6 ms
(`docs/BENCHMARKS.md`, issue 14), which is what bounds how fast a program can submit.
Bodies are encoded by the standard library with `allow_nan=False`: a NaN or an infinity
in a payload is refused here (`ValueError`) rather than sent as something else.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import orjson

from jobstream.client.errors import Unavailable, Unreachable, api_error

RETRY_FOR_S = 30.0  # how long a call keeps trying through 503s and lost connections
FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 2.0


class Transport:
    """See the module docstring. The session is made on first use, in the caller's loop."""

    def __init__(
        self, api: str, headers: dict[str, str], timeout: float, retry_for: float, max_connections: int
    ) -> None:
        self.api = api
        self.retry_for = retry_for
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, connector=connector, json_serialize=_dumps,
            )  # fmt: skip
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def exchange(
        self, method: str, path: str, body: Any, deadline: float | None, params: dict[str, Any] | None = None,
        *, retry: bool | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """(status, parsed answer) of a call that succeeded, trying again as the module says;
        `deadline` in seconds from now (the client's `retry_for` when None). `retry`: whether
        the call may be sent again (by default GET, PUT and DELETE; a POST only when its
        caller says it is safe, as a submit with its idempotency key is); one that may not
        raises its first failure."""
        if retry is None:
            retry = method in _REPEATABLE
        loop = asyncio.get_running_loop()
        end = loop.time() + (self.retry_for if deadline is None else deadline)
        pause = FIRST_PAUSE_S
        data = None if body is None else _dumps(body)
        headers = None if body is None else _JSON
        query = _query(params)
        while True:
            try:
                async with self._open().request(
                    method, self.api + path, data=data, headers=headers, params=query
                ) as resp:
                    status, raw, after = resp.status, await resp.read(), resp.headers.get("retry-after")
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure: Exception = Unreachable(f"{method} {self.api}{path}: {exc!r}")
                wait = pause
            else:
                if status < 400:
                    return status, orjson.loads(raw) if raw else None
                retry_after = _seconds(after)
                failure = api_error(status, _body(raw), retry_after)
                if not isinstance(failure, Unavailable):
                    raise failure
                wait = max(pause, retry_after or 0.0)
            wait *= random.uniform(0.8, 1.2)
            if not retry or loop.time() + wait > end:
                raise failure
            await asyncio.sleep(wait)
            pause = min(pause * 2, MAX_PAUSE_S)


_JSON = {"content-type": "application/json"}
_REPEATABLE = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def _dumps(body: Any) -> str:
    return json.dumps(body, allow_nan=False, separators=(",", ":"))


def _query(params: dict[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query parameters, a list value repeating its name (`type=a&type=b`)."""
    if not params:
        return None
    out = []
    for name, value in params.items():
        for one in value if isinstance(value, list | tuple) else [value]:
            out.append((name, str(one).lower() if isinstance(one, bool) else str(one)))
    return out


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"detail": raw.decode(errors="replace")}
