"""Is Kafka up, is Redis up: a background monitor the routes ask without waiting.

Every `interval_s` each check runs, bounded by `timeout_s`; a check that raises marks its
service down until a later check passes. A check that only times out marks it down only
when nothing has shown the service alive for `grace_s` (`note_ok`: the submit path reports
every acknowledgement): a process whose event loop is saturated by work answers its own
checks late, and that must not turn into 503s for a healthy Kafka. The submit path also reports a
failed send (`mark_down`), so requests fail fast from the first failure rather than
from the next tick. Nothing here restarts a client: aiokafka and redis-py reconnect on
their own, a broken producer replaces itself (`jobstream.producer_guard`, whose `problem`
the Kafka check reports), and the monitor notices when they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jobstream.futures import describe
from jobstream.lifecycle import Lifecycle
from jobstream.producer_guard import GuardedProducer

log = logging.getLogger("jobstream.producer.health")

Check = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ServiceHealth:
    up: bool = True
    error: str | None = None
    since: float = 0.0  # monotonic time of the last flip
    alive_at: float = 0.0  # monotonic time the service last did something for us


class HealthMonitor(Lifecycle):
    """Keeps an up/down verdict per service; a `jobstream.lifecycle.Service`.

    `start()` runs every check once, then keeps checking in the background; `close()`
    cancels the checks (returns at once: each check is bounded by `timeout_s`).
    `clock` (seconds, monotonic) is what the grace period is measured on.
    """

    def __init__(
        self,
        checks: dict[str, Check],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        grace_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._checks = checks
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self._clock = clock
        self._state = {name: ServiceHealth(since=clock()) for name in checks}
        self._task: asyncio.Task[None] | None = None
        self._flipped = asyncio.Event()  # set, then replaced, on every up/down flip

    async def _startup(self) -> None:
        await self.check_now()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def is_up(self, name: str) -> bool:
        return self._state[name].up

    def down(self) -> list[str]:
        """The services currently believed down."""
        return [name for name, s in self._state.items() if not s.up]

    def report(self) -> dict[str, str]:
        """{"kafka": "ok", "redis": "down: <why>"} for /readyz."""
        return {name: "ok" if s.up else f"down: {s.error}" for name, s in self._state.items()}

    @property
    def retry_after_s(self) -> int:
        """What to tell a client to wait: about two checks."""
        return max(1, round(2 * self.interval_s))

    def mark_down(self, name: str, error: str) -> None:
        self._set(name, False, error)

    def note_ok(self, name: str) -> None:
        """The service just answered a real request: it is alive."""
        s = self._state[name]
        s.alive_at = self._clock()
        if not s.up:
            self._set(name, True, None)

    async def check_now(self) -> dict[str, bool]:
        """Run every check once, concurrently, and return the verdicts."""
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._check(n) for n in names))
        return dict(zip(names, outcomes, strict=True))

    async def wait_for(self, name: str, up: bool) -> None:
        """Return once `name` is believed up (or down). For tests and startup."""
        while self._state[name].up is not up:
            await self._flipped.wait()

    async def _check(self, name: str) -> bool:
        try:
            await asyncio.wait_for(self._checks[name](), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            if self._clock() - self._state[name].alive_at < self.grace_s:
                return self._state[name].up  # slow to answer, but it served us just now
            self._set(name, False, f"no answer within {self.timeout_s:g}s")
            return False
        except Exception as exc:
            self._set(name, False, describe(exc))
            return False
        self._state[name].alive_at = self._clock()
        self._set(name, True, None)
        return True

    def _set(self, name: str, up: bool, error: str | None) -> None:
        s = self._state[name]
        if s.up != up:
            s.since = self._clock()
            if up:
                log.info("service up service=%s", name)
            else:
                log.warning("service down service=%s error=%s", name, error)
            s.up = up
            self._flipped.set()
            self._flipped = asyncio.Event()
        s.error = error

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # a check is bounded and caught; this is a bug, keep watching
                log.exception("health check loop failed")


def kafka_check(producer: GuardedProducer) -> Check:
    """Up when the producer can send (it is not being replaced after breaking) and a metadata
    request to the cluster succeeds (aiokafka reconnects as needed)."""

    async def check() -> None:
        if producer.problem is not None:
            raise ConnectionError(producer.problem)
        client = producer.client
        if not await client.force_metadata_update():
            raise ConnectionError("no broker answered a metadata request")
        if not client.cluster.brokers():
            raise ConnectionError("the cluster reports no brokers")

    return check


def redis_check(redis: Any) -> Check:
    """Up when Redis answers PING."""

    async def check() -> None:
        await redis.ping()

    return check
