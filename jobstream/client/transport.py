"""The client's HTTP: one pooled `httpx.AsyncClient`, and the loop that tries a call again
through 503s and lost connections until its deadline.

A 503 is tried again after its `Retry-After` (at least the growing pause: 0.1 s, doubling
to 2 s; each with +-20 % jitter so many clients do not come back at once); a connection
refused, reset or timed out after the pause. Every other 4xx or 5xx raises at once. When
the next try would pass the deadline, the last error is raised: `Unavailable` (naming the
service) or `Unreachable`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from jobstream.client.errors import Unavailable, Unreachable, api_error

RETRY_FOR_S = 30.0  # how long a call keeps trying through 503s and lost connections
FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 2.0


class Transport:
    def __init__(
        self, api: str, headers: dict[str, str], timeout: float, retry_for: float, max_connections: int
    ) -> None:
        self.api = api
        self.retry_for = retry_for
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=api, headers=headers, timeout=timeout, limits=limits)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str) -> httpx.Response:
        """One plain request, no retries (for answers that are not JSON, e.g. `/metrics`)."""
        return await self._http.get(path)

    async def exchange(
        self, method: str, path: str, body: Any, deadline: float | None, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """(status, parsed answer) of a call that succeeded, trying again as the module says;
        `deadline` in seconds from now (the client's `retry_for` when None)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + (self.retry_for if deadline is None else deadline)
        pause = FIRST_PAUSE_S
        while True:
            try:
                resp = await self._http.request(method, path, json=body, params=params)
            except httpx.TransportError as exc:
                failure: Exception = Unreachable(f"{method} {self.api}{path}: {exc!r}")
                wait = pause
            else:
                if resp.status_code < 400:
                    return resp.status_code, resp.json() if resp.content else None
                retry_after = _seconds(resp.headers.get("retry-after"))
                failure = api_error(resp.status_code, _body(resp), retry_after)
                if not isinstance(failure, Unavailable):
                    raise failure
                wait = max(pause, retry_after or 0.0)
            wait *= random.uniform(0.8, 1.2)
            if loop.time() + wait > end:
                raise failure
            await asyncio.sleep(wait)
            pause = min(pause * 2, MAX_PAUSE_S)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {"detail": resp.text}
