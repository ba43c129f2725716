"""The worker app: handlers registered by job type, and the context a handler gets.

    app = WorkerApp()

    @app.handler("images.resize", timeout_s=60)
    async def resize(ctx: JobContext) -> dict[str, Any]:
        await ctx.progress(50, "halfway")
        return {"ok": True}

`jobstream worker module:app --concurrency N` runs it.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumer.errors import ConfigError
from consumer.ratelimit import Limit
from schemas import TYPE_PATTERN, Backoff, JobEnvelope, JobSpec


class ProgressSink(Protocol):
    def __call__(self, job: JobEnvelope, percent: float, message: str | None) -> None: ...


class JobContext:
    """What a handler sees of its job. `progress()` publishes a `progress` status event."""

    __slots__ = ("_sink", "follow_ups", "job", "worker")

    def __init__(self, job: JobEnvelope, worker: str, sink: ProgressSink) -> None:
        self.job = job
        self.worker = worker
        self._sink = sink
        self.follow_ups: list[JobSpec] = []

    def then(self, job_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> None:
        """Add a follow-up job, enqueued (with this job's result as `payload.parent_result`)
        when this one completes, after the job's own `then`."""
        self.follow_ups.append(JobSpec(type=job_type, payload=payload or {}, **fields))

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def traceparent(self) -> str | None:
        """The W3C `traceparent` the job was submitted with (to continue its trace), or None."""
        return self.job.traceparent

    @property
    def attempt(self) -> int:
        return self.job.attempt

    async def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0 to 100). Events of one job arrive in the order they were made."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress percent must be within 0..100, got {percent}")
        self._sink(self.job, float(percent), message)


class Handler(Protocol):
    def __call__(self, ctx: JobContext, /) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    type: str
    func: Handler
    timeout_s: float | None = None
    ordered: bool = False  # records with the same key run one at a time, in order
    max_attempts: int | None = None  # a job's own setting wins over these
    backoff: Backoff | None = None
    non_retryable: tuple[builtins.type[BaseException], ...] = ()
    rate_limit: str | None = None  # "50/s": shared by every worker through Redis


@dataclass
class WorkerApp:
    """A registry of handlers by job type."""

    name: str = "jobstream"
    handlers: dict[str, HandlerSpec] = field(default_factory=dict)

    def handler(
        self,
        job_type: str,
        *,
        timeout_s: float | None = None,
        ordered: bool = False,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        rate_limit: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated async function for `job_type`.

        `max_attempts` and `backoff` apply to jobs that set none; an exception that is an
        instance of a `non_retryable` class (or of `NonRetryable`) ends the job at once.
        """
        if max_attempts is not None and max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        if rate_limit is not None:
            try:
                Limit.parse(rate_limit)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not re.fullmatch(TYPE_PATTERN[1:-1], job_type):
            raise ConfigError(f"job type {job_type!r} must match {TYPE_PATTERN}")
        if job_type in self.handlers:
            raise ConfigError(f"a handler for {job_type!r} is registered already")

        def register(func: Handler) -> Handler:
            self.handlers[job_type] = HandlerSpec(
                job_type, func, timeout_s, ordered, max_attempts, backoff, tuple(non_retryable), rate_limit
            )
            return func

        return register
