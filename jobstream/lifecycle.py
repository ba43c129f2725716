"""One lifecycle for every long-lived part: `start`, `close`, `wait_closed`, `async with`.

A long-lived part (the status publisher, a topic sink, the health monitor, the scheduler,
a worker's done store...) is a `Service`. What every one guarantees:

- `start()` is a coroutine, awaited once the part is built. A second `start()` does
  nothing, and so does a `start()` after `close()`: a closed part stays closed.
- `close()` is idempotent: the first call runs the part's stop steps; a later or
  concurrent call waits for those to finish and returns. It returns within a bound
  each part states (its stop steps are bounded, so a shutdown never hangs on Kafka or
  Redis); what it cannot finish in time it gives up, as the part's docstring says.
- `close()` before `start()` runs the same stop steps on a part that never started:
  they find nothing running and flush what was handed to the part meanwhile.
- `wait_closed()` returns only once `close()` has finished: the part's tasks have ended
  and its clients are closed. It does not ask the part to close.
- `async with part:` starts it and closes it on the way out; a `start()` that raises
  closes what it had opened before the error propagates.

`Lifecycle` is the guard every part shares: it keeps the state and gives the context
manager and `wait_closed`, leaving a part only its own `_startup()` and `_shutdown()`.
Costs: one flag check per `start()`/`close()`; nothing on any per-job path.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, Self, runtime_checkable

__all__ = ["Lifecycle", "Service"]


@runtime_checkable
class Service(Protocol):
    """What every long-lived part offers; see the module docstring for the guarantees."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Lifecycle:
    """A `Service` whose part supplies `_startup()` and `_shutdown()` (both optional).

    `_shutdown()` runs once, whether or not `_startup()` ran or finished, and must be
    bounded. `_closing` turns True as `close()` begins: loops and `write()`s read it.
    """

    __slots__ = ("_closed", "_closing", "_started")

    def __init__(self) -> None:
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the part. Does nothing if it was started or closed before."""
        if self._started or self._closing:
            return
        self._started = True
        await self._startup()

    async def close(self) -> None:
        """Stop the part; returns once it is closed. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._shutdown()
        finally:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once `close()` has finished."""
        await self._closed.wait()

    async def _startup(self) -> None:
        """The part's own start steps."""

    async def _shutdown(self) -> None:
        """The part's own stop steps (bounded)."""
