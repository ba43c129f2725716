"""The W3C trace context of the request being handled.

The submit routes set it from the request's `traceparent` header (an invalid value is
ignored, as the Trace Context spec asks); the submitter stamps it on every job the request
creates, so the job records, their retries, dead letters and follow-ups carry it as a
`traceparent` header and handlers read it as `ctx.traceparent`. A context variable: each
request runs in a task of its own, so one request's value never reaches another's jobs.
"""

from __future__ import annotations

from contextvars import ContextVar

from schemas import parse_traceparent

REQUEST_TRACEPARENT: ContextVar[str | None] = ContextVar("request_traceparent", default=None)


def use_traceparent(header: str | None) -> None:
    """Take the request's `traceparent` header (or its absence) for the jobs it submits."""
    REQUEST_TRACEPARENT.set(parse_traceparent(header))
