"""Running a worker as a process: signals, the event loop, the exit code."""

from __future__ import annotations

import asyncio
import logging
import signal

from consumer.app import WorkerApp
from consumer.worker import Worker
from jobstream.settings import WorkerSettings

log = logging.getLogger("jobstream.worker")


async def serve(app: WorkerApp, settings: WorkerSettings) -> None:
    """Run until SIGTERM or SIGINT; a second signal cancels the running jobs at once."""
    loop = asyncio.get_running_loop()
    worker = Worker(app, settings)
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: draining", signal.Signals(signum).name)
            worker.stop()
        else:
            log.warning("received %s again: aborting running jobs", signal.Signals(signum).name)
            worker.abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await worker.start()
        await worker.wait_closed()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_worker(app: WorkerApp, settings: WorkerSettings) -> int:
    """Run a worker process to completion; returns the exit code."""
    if not app.handlers:
        log.error("the worker app %r has no handlers", app.name)
        return 2
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(app, settings))
    return 0
