"""The HTTP routes: submit, batch, lookup, cancel, queues, health, readiness, metrics.

Submit routes read the raw body and parse it themselves (`producer.inputs`) so that each
kind of bad input gets its own status and message, and answer with orjson bytes.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from jobstream.http_errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    Unavailable,
    check_content_type,
)
from jobstream.http_responses import json_response
from jobstream.projection import Projection
from producer.health import HealthMonitor
from producer.idempotency import Deduplicator
from producer.idempotency_keys import with_header
from producer.inputs import parse_batch, parse_job
from producer.runtime import HealthDep, MetricsDep, ProjectionDep, Runtime, RuntimeDep
from producer.trace import use_traceparent
from scheduler import CANCELLED
from schemas import encode_cancel

router = APIRouter()

LOOKUP_TIMEOUT_S = 2.0
_FINISHED = frozenset({"completed", "dead", "cancelled"})
_MAYBE_DELAYED = frozenset({"scheduled", "queued"})
JOB_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)


@router.post("/jobs", status_code=202, summary="Submit one job")
async def submit_job(request: Request, runtime: RuntimeDep) -> Response:
    """Body: a job spec (`type`, optional `payload`, `priority`, `key`, `max_attempts`,
    `timeout_s`, `backoff`, `idempotency_key`, `delay_ms` or `run_at`). 202 `{"id", "state":
    "queued"}` once Kafka has the job, or `{"id", "state": "scheduled", "run_at"}` once Redis
    has a job due later; with an `Idempotency-Key` header or field, a repeat answers 200 `{"id",
    "state", "duplicate": true}` with the first job, and 409 if the key came with another body."""
    headers = request.headers
    body = await request.body()
    return await submit_one(
        runtime, headers.get("content-type"), headers.get("idempotency-key"), body, headers.get("traceparent")
    )


async def submit_one(
    runtime: Runtime,
    content_type: str | None,
    idem_key: str | None,
    raw: bytes,
    traceparent: str | None = None,
) -> Response:
    """`POST /jobs`, whichever way the request came in (the route, or `producer.fastpath`)."""
    started = time.perf_counter()
    check_content_type(content_type)
    use_traceparent(traceparent)
    spec = with_header(parse_job(raw, runtime.limits), idem_key)
    if spec.idempotency_key is not None:  # 200 with the first job for a repeat
        body, status = await Deduplicator(runtime).submit_one(spec)
    else:
        body, status = await runtime.submitter.submit(spec), 202  # "run_at" too when scheduled
    runtime.metrics.observe_latency("single", time.perf_counter() - started)
    return json_response(body, status)


@router.post("/jobs/batch", summary="Submit many jobs")
async def submit_batch(request: Request, runtime: RuntimeDep) -> Response:
    """Body: `{"jobs": [spec, ...]}`. 200 with one result per item, in order: `{"index",
    "id", "state": "queued"}` or `{"index", "error": {"status", "message"}}`."""
    started = time.perf_counter()
    check_content_type(request.headers.get("content-type"))
    use_traceparent(request.headers.get("traceparent"))
    settings = runtime.settings
    items = parse_batch(await request.body(), settings.max_batch, runtime.limits)
    results = await Deduplicator(runtime).submit_many(items)  # = submitter's when no item has a key
    runtime.metrics.observe_latency("batch", time.perf_counter() - started)
    return json_response({"results": results})


@router.get("/jobs/{job_id}", summary="A job's latest state")
async def get_job(job_id: str, projection: ProjectionDep, health: HealthDep) -> Response:
    """`{"id", "type", "state", "attempt", "progress", "result", "error", "created_at",
    "updated_at", "parent_id", "children"}`; 404 when the projection does not know the id."""
    return json_response(await get_state(job_id, projection, health))


async def get_state(job_id: str, projection: Projection, health: HealthMonitor) -> dict[str, Any]:
    if not _JOB_ID.match(job_id):
        error = FieldError("id", "must be 1 to 128 characters: letters, digits, '_', '.', ':' or '-'")
        raise InvalidInput(f"invalid job id: {error.message}", [error])
    if not health.is_up("redis"):
        raise _redis_down(health.retry_after_s)
    try:
        state = await asyncio.wait_for(projection.get(job_id), LOOKUP_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        raise _redis_down(health.retry_after_s) from exc
    if state is None:
        raise NotFound(f"no job with id {job_id}")
    return state


@router.delete("/jobs/{job_id}", status_code=202, summary="Cancel a job")
async def cancel_job(job_id: str, runtime: RuntimeDep) -> Response:
    """A scheduled job not yet due is removed from Redis: 200 `{"id", "state": "cancelled"}`.
    Otherwise 202 `{"id", "state": "cancelling"}`: every worker is told (control topic); one that
    reaches the job skips it, one running it cancels it, and publishes `cancelled` (not
    retried). A delayed job a scheduler is firing is also removed from Redis, so it is never
    fired again. 409 with the state for a job already completed, dead or cancelled."""
    state = await get_state(job_id, runtime.projection, runtime.health)
    # a delayed job that a scheduler claimed is already `queued`, and still in Redis
    maybe_delayed = state["state"] in _MAYBE_DELAYED
    if maybe_delayed and await runtime.delayed.cancel(job_id, state["type"]) == CANCELLED:
        return json_response({"id": job_id, "state": "cancelled"}, 200)  # removed before it was due
    if state["state"] in _FINISHED:
        raise Conflict(
            f"job {job_id} is already {state['state']}; there is nothing to cancel", state=state["state"]
        )
    topic = runtime.settings.topics.control
    try:
        async with asyncio.timeout(runtime.settings.submit_timeout_s):
            sent = await runtime.producer.send(
                topic, encode_cancel(job_id, int(time.time() * 1000)), key=job_id.encode()
            )
            await sent
    except (KafkaError, TimeoutError) as exc:
        raise Unavailable("kafka", f"Kafka did not take the cancel request ({exc}); retry later") from exc
    return json_response({"id": job_id, "state": "cancelling"}, 202)


@router.get("/queues", summary="Depth of every queue: priority topics, retry tiers, delayed, dead")
async def queues(runtime: RuntimeDep) -> Response:
    """`{"at", "group", "queues": [{"kind": "priority" | "retry", "name", "topic", "partitions",
    "depth", "end_offset"}], "delayed": {"waiting", "claimed"}, "dead_letters": {"indexed",
    "on_topic"}}`. `depth` is the workers' group lag, retries still waiting included; the
    answer may be up to a second old. 503 naming Kafka or Redis when one cannot answer."""
    return json_response(await runtime.queues.snapshot())


@router.get("/healthz", summary="Liveness")
async def healthz() -> Response:
    return json_response({"ok": True})


@router.get("/readyz", summary="Readiness: Kafka and Redis reachable")
async def readyz(health: HealthDep) -> Response:
    """200 `{"kafka": "ok", "redis": "ok"}`, or 503 with the same keys saying what is down."""
    report = health.report()
    down = health.down()
    if not down:
        return json_response(report)
    body = {**report, "detail": f"{' and '.join(down)} unavailable"}
    return json_response(body, 503, headers={"Retry-After": str(health.retry_after_s)})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)


def _redis_down(retry_after: int) -> Unavailable:
    return Unavailable("redis", "Redis is unreachable: job lookups are unavailable", retry_after=retry_after)
