"""Running one job's handler, and turning how it ended into an outcome.

Guarantees:
- A job is not started when it has no handler here (failed: `UnknownJobType`, dead at
  once), was asked to be cancelled (`cancelled`), or expired before it started (`dead`,
  reason `expired`). Otherwise its `active` event goes out before the handler starts.
- The handler runs under its timeout (the job's `timeout_s`, else its handler's, else the
  worker default); running past it cancels the handler and fails the attempt with
  `JobTimeout`. A result that is not JSON or is larger than `MAX_RESULT_BYTES` fails it
  with `ResultError`; any other exception fails it with that exception.
- A job aborted by a drain reports nothing: it stays uncommitted and runs again
  elsewhere; one aborted because it was cancelled reports `cancelled`.
- A completed job's follow-ups are in Kafka before its `completed` event is sent; when
  the worker stops first, the job reports nothing and runs again (same follow-up ids).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Any

import orjson

from consumer.app import JobContext
from consumer.control import CancelRequests
from consumer.errors import JobTimeout, ResultError
from consumer.intake import Item
from consumer.metrics import JobMetrics
from consumer.outcomes import Outcomes
from consumer.retry import Failure
from schemas import now_ms

log = logging.getLogger("jobstream.worker")

MAX_RESULT_BYTES = 1024 * 1024


class Executor:
    """Runs a job's handler (`run`); one instance serves every runner."""

    def __init__(
        self,
        outcomes: Outcomes,
        cancels: CancelRequests,
        metrics: JobMetrics,
        default_timeout_s: float | None,
        worker_id: str,
    ) -> None:
        self._outcomes = outcomes
        self._cancels = cancels
        self._metrics = metrics
        self._default_timeout_s = default_timeout_s
        self._id = worker_id

    async def run(self, item: Item) -> None:
        job, spec = item.job, item.spec
        outcomes = self._outcomes
        if spec is None:
            msg = f"no handler for job type {job.type!r} on this worker"
            await outcomes.failed(item, Failure({"type": "UnknownJobType", "message": msg}))
            return
        if job.id in self._cancels:
            outcomes.cancelled(item)
            return
        now = now_ms()
        if job.expires_at is not None and now > job.expires_at:
            await outcomes.expired(item)
            return
        wait_ms = None
        if since := max(job.created_at, job.not_before or 0):  # 0: made by a tool that sets neither
            wait_ms = max(0, now - since)
            self._metrics.waited(job.type, wait_ms / 1000)
        outcomes.active(job, wait_ms)
        timeout = job.timeout_s or spec.timeout_s or self._default_timeout_s
        ctx = JobContext(job, self._id, outcomes.progress)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout) as cm:
                try:
                    result = await spec.func(ctx)
                finally:
                    self._metrics.ran(job.type, time.perf_counter() - started)
            _check_result(result)
        except asyncio.CancelledError:
            if not item.aborted:
                raise
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            if job.id in self._cancels:
                outcomes.cancelled(item)
            else:
                log.info("job %s %s aborted by drain; left for redelivery", job.id, job.type)
            return
        except Exception as exc:
            if isinstance(exc, TimeoutError) and cm.expired():
                timed_out = JobTimeout(f"job exceeded its timeout of {timeout}s")
                await outcomes.failed(item, Failure(_error_dict(timed_out), timed_out, timed_out=True))
            else:
                await outcomes.failed(item, Failure(_error_dict(exc), exc))
        else:
            specs = [*job.then, *ctx.follow_ups]
            children = await outcomes.follow_ups(job, specs, result) if specs else []
            if children is not None:  # None: stopping before Kafka took them; runs again
                outcomes.completed(item, result, children)


def _check_result(result: Any) -> None:
    try:
        size = len(orjson.dumps(result))
    except TypeError as exc:
        raise ResultError(f"the handler's result is not JSON-serializable: {exc}") from None
    if size > MAX_RESULT_BYTES:
        raise ResultError(f"the handler's result is {size} bytes; the limit is {MAX_RESULT_BYTES}")


def _error_dict(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc))
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__, "traceback": tb[-8_000:]}
