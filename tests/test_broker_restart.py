"""A broker restarted with SIGTERM under steady load: every process recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from jobstream.cli.stack import KafkaBroker
from tests.conftest import MS, Services, deployment
from tests.helpers import StatusLog
from tests.pipeline import run_pipeline

pytestmark = pytest.mark.slow

RATE = 200  # submits per second, the figure
RECOVERED_RUN = 400  # consecutive accepted submits that count as recovered (2 s of load)


@dataclass
class SteadyLoad:
    """Submits one job every 1/rate seconds, each in its own task; keeps every answer."""

    http: httpx.AsyncClient
    rate: int
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)  # (sent at, status, id)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            n += 1
            task = asyncio.create_task(self._one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(max(0.0, start + n / self.rate - time.monotonic()))
        await asyncio.gather(*self._tasks)

    async def _one(self) -> None:
        sent = time.monotonic()
        try:
            r = await self.http.post("/jobs", json={"type": "example.noop"})
            job_id = r.json().get("id") if r.status_code == 202 else None
            self.answers.append((sent, r.status_code, job_id))
        except httpx.HTTPError:
            self.answers.append((sent, 0, None))
        self._changed.set()

    def accepted(self) -> list[str]:
        return [job_id for _, status, job_id in self.answers if status == 202 and job_id]

    def trailing_run(self) -> int:
        """How many of the latest answers (by send time) in a row were 202."""
        run = 0
        for _, status, _ in sorted(self.answers, reverse=True):
            if status != 202:
                break
            run += 1
        return run

    async def wait_for_run(self, length: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.trailing_run() < length:
            left = deadline - time.monotonic()
            if left <= 0:
                tail = [s for _, s, _ in sorted(self.answers)[-20:]]
                raise AssertionError(f"submits never recovered in {timeout_s:.0f}s: last answers {tail}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))


async def test_broker_sigterm_under_load_recovers_without_restarts(
    private_kafka: KafkaBroker, services: Services, prefix: str, env: dict[str, str], tmp_path: Path
) -> None:
    """Broker stopped (SIGTERM) and started under 200 submits/s: submits recover, every 202 completes."""
    settings = await deployment(private_kafka.bootstrap, services.redis_url, prefix)
    env = {**env, "KAFKA_BOOTSTRAP_SERVERS": private_kafka.bootstrap}
    with run_pipeline(env, tmp_path, workers=2) as pipe:
        async with StatusLog(settings) as status, httpx.AsyncClient(base_url=pipe.api, timeout=30) as http:
            load = SteadyLoad(http, RATE)
            stop = asyncio.Event()
            loader = asyncio.create_task(load.run(stop))
            try:
                await load.wait_for_run(RECOVERED_RUN, 30_000 * MS)
                await asyncio.to_thread(private_kafka.stop)  # SIGTERM: a clean, controlled shutdown
                await asyncio.sleep(10)  # the outage itself, under load: not an assertion
                await asyncio.to_thread(private_kafka.start)
                await load.wait_for_run(RECOVERED_RUN, 60_000 * MS)
            finally:
                stop.set()
                await loader
            accepted = load.accepted()
            assert len(accepted) > 2 * RECOVERED_RUN
            await status.wait_for(
                lambda: all("completed" in status.states(j) for j in accepted),
                timeout_s=90_000 * MS,
                what=f"all {len(accepted)} accepted jobs to complete",
            )
        for proc in pipe.workers:
            assert proc.poll() is None, "a worker exited"
