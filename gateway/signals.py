"""Close WebSocket clients with 1001 on SIGTERM/SIGINT, before uvicorn closes them.

Why: on shutdown uvicorn closes every open WebSocket itself, with 1012, before the
lifespan exits; clients would never see "1001 server shutting down". So while the app
runs, a signal first runs `drain()` (close clients with 1001), then hands the signal to
the handler that was installed before (uvicorn's), which shuts the server down as usual.
A second signal during the drain goes straight to the previous handler (a second Ctrl-C
still forces the exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger("jobstream.gateway")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def drain_on_signal(drain: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Within the block, run `drain()` before the previous handler of SIGTERM/SIGINT.

    Does nothing off the main thread, or when a previous handler is not a Python callable
    (no server to hand the signal to). Restores the previous handlers on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if not all(callable(h) for h in previous.values()):
        yield
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    draining = False

    async def drain_then(sig: int, frame: FrameType | None) -> None:
        try:
            await drain()
        except Exception:
            log.exception("drain on signal failed")
        _call(previous[sig], sig, frame)

    def handler(sig: int, frame: FrameType | None) -> None:
        nonlocal draining
        if draining:
            _call(previous[sig], sig, frame)
            return
        draining = True
        log.info("signal %s: closing clients before shutdown", signal.Signals(sig).name)

        def spawn() -> None:
            task = loop.create_task(drain_then(sig, frame), name="gateway-drain")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.call_soon_threadsafe(spawn)

    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for restore, prev in previous.items():
            if signal.getsignal(restore) is handler:
                signal.signal(restore, prev)


def _call(h: Any, sig: int, frame: FrameType | None) -> None:
    if callable(h):
        h(sig, frame)
