"""`SyncClient`: the `Client`, blocking, for programs without an event loop (a Django view,
a script, the command line).

It runs one `Client` on an event loop in a thread of its own and waits for each call there,
so it shares the asynchronous client's behaviour exactly (retries, idempotency keys, one
connection pool, one WebSocket for every awaited result). Use it from any number of
threads; close it (`with`, or `close()`) to stop the thread.

    with SyncClient() as client:
        job = client.submit("images.resize", {"w": 64})
        print(job.result(timeout=30))
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from jobstream.client.core import Client, Job
from jobstream.client.errors import ApiError
from schemas import StatusEvent

T = TypeVar("T")
_END = object()


class SyncJob:
    """A submitted job (see `Job`), its methods blocking."""

    def __init__(self, client: SyncClient, job: Job) -> None:
        self._client = client
        self._job = job
        self.id, self.state, self.run_at, self.duplicate = job.id, job.state, job.run_at, job.duplicate

    def __repr__(self) -> str:
        return f"SyncJob({self.id!r}, state={self.state!r})"

    def result(self, timeout: float | None = None) -> Any:
        return self._client._run(self._job.result(timeout))

    def status(self) -> dict[str, Any]:
        return self._client._run(self._job.status())

    def cancel(self) -> str:
        return self._client._run(self._job.cancel())

    def events(self) -> Iterator[StatusEvent]:
        return self._client._iterate(lambda c: c.events(jobs=[self.id], until_done=True))


class SyncClient:
    """`Client`'s API, blocking; the same arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jobstream-client", daemon=True)
        self._thread.start()
        self._client: Client = self._run(_make(args, kwargs))

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_running():
            return
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def submit(self, type: str, payload: dict[str, Any] | None = None, **fields: Any) -> SyncJob:
        return SyncJob(self, self._run(self._client.submit(type, payload, **fields)))

    def submit_many(self, jobs: Sequence[dict[str, Any]], **kwargs: Any) -> list[SyncJob | ApiError]:
        done = self._run(self._client.submit_many(jobs, **kwargs))
        return [SyncJob(self, j) if isinstance(j, Job) else j for j in done]

    def job(self, job_id: str) -> SyncJob:
        return SyncJob(self, self._client.job(job_id))

    def status(self, job_id: str) -> dict[str, Any]:
        return self._run(self._client.status(job_id))

    def cancel(self, job_id: str) -> str:
        return self._run(self._client.cancel(job_id))

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        return self._run(self._client.result(job_id, timeout))

    def events(self, **selection: Any) -> Iterator[StatusEvent]:
        return self._iterate(lambda c: c.events(**selection))

    def dead_letters(self, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._client.dead_letters(**kwargs))

    def dead_letter(self, dead_id: str) -> dict[str, Any]:
        return self._run(self._client.dead_letter(dead_id))

    def replay(self, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._client.replay(**kwargs))

    def replay_status(self, replay_id: str) -> dict[str, Any]:
        return self._run(self._client.replay_status(replay_id))

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self._run(self._client.request(method, path, body, **kwargs))

    def exchange(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return self._run(self._client.exchange(method, path, body, **kwargs))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, make: Any) -> Iterator[StatusEvent]:
        """An async iterator of the client's, read in its loop and handed over item by item."""
        items: queue.Queue[Any] = queue.Queue(maxsize=1_000)
        stop = threading.Event()

        async def hand(item: Any) -> None:
            """Queue `item` for the reader without blocking this loop (the reader may be gone)."""
            while not stop.is_set():
                try:
                    items.put_nowait(item)
                    return
                except queue.Full:
                    await asyncio.sleep(0.01)

        async def pump() -> None:
            try:
                async for item in make(self._client):
                    await hand(item)
                    if stop.is_set():
                        return
                await hand(_END)
            except asyncio.CancelledError:
                return  # the reader stopped
            except Exception as exc:  # handed to the reader
                await hand(exc)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            future.cancel()


async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Client:
    return Client(*args, **kwargs)
