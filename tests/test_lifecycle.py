"""The lifecycle protocol (`jobstream.lifecycle`): pure tests, no broker, no Redis."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from consumer.completions import Completions
from consumer.control import CancelRequests
from consumer.donestore import DoneStore
from consumer.metrics import MetricsServer
from consumer.worker import Worker
from deadletters.index import DlqIndexer
from deadletters.replay import Replayer
from gateway.client import Client
from gateway.feed import Feed
from gateway.hub import Hub
from gateway.service import Gateway
from jobstream.lifecycle import Lifecycle, Service
from jobstream.producer_guard import GuardedProducer
from jobstream.projector import Projector
from jobstream.status_publisher import StatusPublisher
from producer.groupcommit import GroupCommit
from producer.health import HealthMonitor
from producer.queues import QueueStats
from scheduler.loop import Scheduler
from tests.conftest import MS

# typed so that mypy checks each class against the protocol, not only its method names
PARTS: list[type[Service]] = [
    StatusPublisher, Projector, DlqIndexer, GuardedProducer, HealthMonitor, GroupCommit, QueueStats,
    Scheduler, CancelRequests, DoneStore, Completions, MetricsServer, Worker, Feed, Hub, Gateway, Client,
    Replayer,
]  # fmt: skip


class Part(Lifecycle):
    """Records its steps; `gate`, when set, holds `_shutdown` until it is set."""

    def __init__(self, fail_start: bool = False) -> None:
        super().__init__()
        self.steps: list[str] = []
        self.fail_start = fail_start
        self.gate: asyncio.Event | None = None

    async def _startup(self) -> None:
        self.steps.append("start")
        if self.fail_start:
            raise RuntimeError("cannot start")

    async def _shutdown(self) -> None:
        self.steps.append("close")
        if self.gate is not None:
            await self.gate.wait()


async def _returns_soon(aw: Any) -> bool:
    try:
        async with asyncio.timeout(50 * MS):
            await aw
    except TimeoutError:
        return False
    return True


async def test_close_before_start_runs_the_stop_steps_once_and_start_then_does_nothing() -> None:
    """A part closed before it started runs its stop steps, and stays closed."""
    part = Part()
    await part.close()
    await part.start()
    await part.close()
    assert part.steps == ["close"]
    assert await _returns_soon(part.wait_closed())


async def test_start_twice_starts_once() -> None:
    """A second `start()` does nothing."""
    part = Part()
    await part.start()
    await part.start()
    assert part.steps == ["start"]
    await part.close()


async def test_close_twice_stops_once_and_a_concurrent_close_waits_for_the_first() -> None:
    """The stop steps run once; a close during them returns only once they have finished."""
    part = Part()
    part.gate = asyncio.Event()
    await part.start()
    first = asyncio.create_task(part.close())
    await asyncio.sleep(0)
    second = asyncio.create_task(part.close())
    assert not await _returns_soon(asyncio.shield(second))
    part.gate.set()
    await asyncio.gather(first, second)
    await part.close()
    assert part.steps == ["start", "close"]


async def test_wait_closed_returns_only_after_close() -> None:
    """`wait_closed()` does not close the part, and returns once `close()` has finished."""
    part = Part()
    await part.start()
    waiter = asyncio.create_task(part.wait_closed())
    assert not await _returns_soon(asyncio.shield(waiter))
    await part.close()
    assert await _returns_soon(waiter)
    assert await _returns_soon(part.wait_closed())


async def test_async_with_starts_and_closes_even_on_error() -> None:
    """`async with` starts the part and closes it when the body raises."""
    part = Part()
    with pytest.raises(ValueError):
        async with part as entered:
            assert entered is part and part.steps == ["start"]
            raise ValueError
    assert part.steps == ["start", "close"]


async def test_a_start_that_fails_in_async_with_closes_what_it_opened() -> None:
    """A failing `start()` under `async with` closes the part before the error propagates."""
    part = Part(fail_start=True)
    with pytest.raises(RuntimeError):
        async with part:
            pytest.fail("the body must not run")
    assert part.steps == ["start", "close"]
    assert await _returns_soon(part.wait_closed())


@pytest.mark.parametrize("cls", PARTS, ids=lambda c: c.__name__)
def test_every_long_lived_part_is_a_service(cls: type[Service]) -> None:
    """Each long-lived part offers `start`, `close`, `wait_closed` and `async with`."""
    assert issubclass(cls, Service)
    for name in ("start", "close", "wait_closed", "__aenter__", "__aexit__"):
        assert asyncio.iscoroutinefunction(getattr(cls, name)), name


async def _check_ok() -> None:
    pass


def _pure_parts() -> list[Service]:
    """Parts that can be built with no I/O (what they would talk to is never reached)."""
    nothing = cast(Any, None)

    async def flush(items: list[int]) -> None:
        pass

    gc: GroupCommit[int] = GroupCommit(flush)
    completions: Completions[int] = Completions(nothing, lambda batch: None)
    return [
        StatusPublisher(nothing, "status", 1),
        gc,
        HealthMonitor({"x": _check_ok}),
        completions,
        Hub(queue_max=10),
        GuardedProducer(lambda: nothing),
    ]


async def test_parts_close_before_start_and_twice() -> None:
    """Every part built without I/O can be closed before it starts, twice, and waited for."""
    for part in _pure_parts():
        await part.close()
        await part.close()
        assert await _returns_soon(part.wait_closed()), part


async def test_parts_in_async_with_are_closed_on_exit() -> None:
    """`async with` on a part built without I/O leaves it closed."""
    for part in _pure_parts()[:-1]:  # the producer's start talks to Kafka
        async with part:
            pass
        assert await _returns_soon(part.wait_closed()), part
