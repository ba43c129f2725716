"""The HTTP routes: batch, lookup, cancel, queues, health, readiness, metrics.

`POST /jobs` has no route: `producer.fastpath` answers it. The batch route reads the raw
body and parses it itself (`producer.inputs`) so that each kind of bad input gets its own
status and message, and answers with orjson bytes: one row per item, built here from the
submitter's results (`producer.results`).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Query, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from jobstream.access.http import principal_of, type_refused
from jobstream.access.keys import Principal
from jobstream.http_errors import (
    ApiError,
    Conflict,
    FieldError,
    InvalidInput,
    ItemError,
    NotFound,
    Unavailable,
    check_content_type,
)
from jobstream.http_responses import json_response
from jobstream.projection import Projection
from producer.health import HealthMonitor
from producer.inputs import parse_batch
from producer.results import Refused, SubmitResult
from producer.runtime import HealthDep, ProjectionDep, RuntimeDep
from producer.trace import use_traceparent
from scheduler import CANCELLED
from schemas import TERMINAL_STATES, JobSpec, decode_job, encode_cancel, now_ms, rfc3339

router = APIRouter()

LOOKUP_TIMEOUT_S = 2.0

_MAYBE_DELAYED = frozenset({"scheduled", "queued"})
JOB_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)


@router.post("/jobs/batch", summary="Submit many jobs")
async def submit_batch(request: Request, runtime: RuntimeDep) -> Response:
    """Body: `{"jobs": [spec, ...]}`. 200 with one result per item, in order: `{"index",
    "id", "state": "queued"}` or `{"index", "error": {"status", "message"}}`."""
    started = time.perf_counter()
    check_content_type(request.headers.get("content-type"))
    use_traceparent(request.headers.get("traceparent"))
    settings = runtime.settings
    items = parse_batch(await request.body(), settings.max_batch, runtime.limits)
    if (principal := principal_of(request.scope)) is not None and principal.limited:
        items = [_typed(item, principal) for item in items]
    results = await runtime.deduplicator.submit_many(items)  # = the submitter's when no item has a key
    rows = [_row(i, result) for i, result in enumerate(results)]
    runtime.metrics.observe_latency("batch", time.perf_counter() - started)
    return json_response({"results": rows})


def _typed(item: JobSpec | ItemError, principal: Principal) -> JobSpec | ItemError:
    """`item`, or its 403 when the key may not submit its type."""
    if isinstance(item, JobSpec) and not principal.allows(item.type):
        return ItemError(403, type_refused(principal, item.type, "submit").detail)
    return item


def _row(i: int, result: SubmitResult) -> dict[str, Any]:
    """A batch item's row: `{"index", "id", "state", "run_at"?, "duplicate"?}` or `{"index",
    "id"?, "error": {"status", "message", "errors"?}}`."""
    if isinstance(result, Refused):
        if result.id is None:
            return {"index": i, "error": result.error.as_dict()}
        return {"index": i, "id": result.id, "error": result.error.as_dict()}
    row: dict[str, Any] = {"index": i, "id": result.id, "state": result.state}
    if result.run_at is not None:
        row["run_at"] = result.run_at
    if result.duplicate:
        row["duplicate"] = True
    return row


@router.get("/jobs/{job_id}", summary="A job's latest state")
async def get_job(job_id: str, request: Request, projection: ProjectionDep, health: HealthDep) -> Response:
    """`{"id", "type", "state", "attempt", "progress", "result", "error", "created_at",
    "updated_at", "parent_id", "children"}`; 404 when the projection does not know the id."""
    return json_response(await get_state(job_id, projection, health, principal_of(request.scope), "see"))


@router.get("/jobs/{job_id}/events", summary="A job's timeline")
async def get_job_events(
    job_id: str, request: Request, projection: ProjectionDep, health: HealthDep
) -> Response:
    """`{"id", "events": [{"state", "attempt", "at", "worker"?, "error"?: {"type", "message"},
    "reason"?, "progress"?, ...}]}`: the job's newest 50 status events, oldest first, as the
    gateway's projector recorded them (a projector that read an event twice after a
    restart records it twice). 404 when the job is unknown."""
    await get_state(job_id, projection, health, principal_of(request.scope), "see")
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            found = await projection.events(job_id)
    except (RedisError, OSError, TimeoutError) as exc:
        raise _redis_down(health.retry_after_s) from exc
    return json_response({"id": job_id, "events": found})


@router.get("/jobs/{job_id}/record", summary="A job as submitted, payload included")
async def get_job_record(job_id: str, request: Request, runtime: RuntimeDep) -> Response:
    """`{"id", "source": "kafka" | "delayed", "topic", "partition", "offset", "timestamp", "job"}`:
    the job's envelope (`payload`, options, follow-ups) read back from its record on its
    priority topic, or from Redis while it is delayed. 404 when the job is unknown, or its
    record is gone (older than the topic's retention). Reads up to a few seconds of the
    partition: for people, not for polling."""
    state = await get_state(job_id, runtime.projection, runtime.health, principal_of(request.scope), "see")
    try:
        found = await runtime.records.find(state)
    except (RedisError, OSError) as exc:
        raise _redis_down(runtime.health.retry_after_s) from exc
    except (KafkaError, TimeoutError) as exc:
        raise Unavailable("kafka", f"Kafka did not answer the read of {job_id}'s record ({exc!r})") from exc
    if found is None:
        priority = state.get("priority") or "normal"
        where = "Redis" if state.get("queued_at") is None else f"its {priority} topic"
        raise NotFound(f"job {job_id}'s record is not in {where}: older than the retention, or not written")
    return json_response(found)


async def get_state(
    job_id: str, projection: Projection, health: HealthMonitor, principal: Principal | None = None,
    doing: str = "see",
) -> dict[str, Any]:  # fmt: skip
    """The job's state; 403 when `principal` may not `doing` jobs of its type."""
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
    if principal is not None and not principal.allows(state.get("type") or ""):
        raise type_refused(principal, state.get("type") or "", doing)
    return state


@router.delete("/jobs/{job_id}", status_code=202, summary="Cancel a job")
async def cancel_job(job_id: str, request: Request, runtime: RuntimeDep) -> Response:
    """A scheduled job not yet due is removed from Redis: 200 `{"id", "state": "cancelled"}`.
    Otherwise 202 `{"id", "state": "cancelling"}`: every worker is told (control topic); one that
    reaches the job skips it, one running it cancels it, and publishes `cancelled` (not
    retried). A delayed job a scheduler is firing is also removed from Redis, so it is never
    fired again. 409 with the state for a job already completed, dead or cancelled."""
    state = await get_state(job_id, runtime.projection, runtime.health, principal_of(request.scope), "cancel")
    # a delayed job that a scheduler claimed is already `queued`, and still in Redis
    maybe_delayed = state["state"] in _MAYBE_DELAYED
    if maybe_delayed and await runtime.delayed.cancel(job_id, state["type"]) == CANCELLED:
        return json_response({"id": job_id, "state": "cancelled"}, 200)  # removed before it was due
    if state["state"] in TERMINAL_STATES:
        raise Conflict(
            f"job {job_id} is already {state['state']}; there is nothing to cancel", state=state["state"]
        )
    topic = runtime.settings.topics.control
    try:
        async with asyncio.timeout(runtime.settings.submit_timeout_s):
            sent = await runtime.producer.send(topic, encode_cancel(job_id, now_ms()), key=job_id.encode())
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


@router.get("/delayed", summary="The next delayed jobs by due time")
async def delayed(
    request: Request, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response:
    """`{"waiting", "claimed", "items": [{"id", "type", "priority", "due_at", "run_at", "attempt"}]}`:
    the next `limit` jobs in Redis not yet claimed by a scheduler, soonest first (a key
    limited to some types sees those only). Cancel one with `DELETE /jobs/{id}`."""
    store = runtime.delayed.store
    principal = principal_of(request.scope)
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            (waiting, claimed), upcoming = await asyncio.gather(store.counts(), store.upcoming(limit))
    except (RedisError, OSError, TimeoutError) as exc:
        raise _redis_down(runtime.health.retry_after_s) from exc
    items = []
    for due, raw in upcoming:
        job = decode_job(raw)
        if principal is None or principal.allows(job.type):
            items.append({"id": job.id, "type": job.type, "priority": job.priority.value, "due_at": due,
                          "run_at": rfc3339(due), "attempt": job.attempt})  # fmt: skip
    return json_response({"waiting": waiting, "claimed": claimed, "items": items})


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
async def metrics(runtime: RuntimeDep) -> Response:
    """The API's metrics, with the queues' depths as `GET /queues` reads them (left out
    while Kafka or Redis cannot say)."""
    m = runtime.metrics
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            m.queues_last = await runtime.queues.snapshot()
    except (ApiError, KafkaError, RedisError, OSError, TimeoutError):
        m.queues_last = None
    return Response(m.render(), media_type=m.content_type)


def _redis_down(retry_after: int) -> Unavailable:
    return Unavailable("redis", "Redis is unreachable: job lookups are unavailable", retry_after=retry_after)
