"""The schedule routes: `PUT /schedules/{name}` (upsert), `GET /schedules`,
`GET /schedules/{name}`, `DELETE`, `POST .../pause`, `.../resume`, `.../run`.

A schedule's job is checked as a submitted job is (`producer.job_checks`: numbers, payload
and record sizes), so an occurrence never fails where a submit would have been refused.
What fires the occurrences is the scheduler loop (`scheduler.recurring`); `run` fires one
occurrence now from this process, through the same firer, and records it among the runs
(`manual`) without counting it toward `limit`. A key limited to some job types may manage
and see only schedules of those types.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from jobstream.access.http import principal_of, type_refused
from jobstream.http_errors import (
    FieldError,
    InvalidInput,
    NotFound,
    Unavailable,
    check_content_type,
    from_redis,
    parse_model,
)
from jobstream.http_responses import json_response
from producer.job_checks import check_job, may_hold_nonfinite
from producer.runtime import Runtime, RuntimeDep
from scheduler.recurring import NAME_PATTERN, Schedule, ScheduleSpec, ScheduleState, occurrence, occurrence_id
from schemas import JobSpec, now_ms, rfc3339

router = APIRouter()
T = TypeVar("T")

REDIS_TIMEOUT_S = 2.0
NEXT_SHOWN = 3  # next run times in a schedule's view
_NAME = re.compile(NAME_PATTERN)


@router.put("/schedules/{name}", summary="Create or update a recurring schedule")
async def put_schedule(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """Body: `cron` (and `tz`) or `every_ms`; the job: `type`, `payload`, `priority`, `key`,
    `max_attempts`, `timeout_s`, `backoff`, `ttl_ms`, `then`; `start_at`, `end_at`, `limit`,
    `catch_up` (`none`, `last`, `all`), `catch_up_max`. 201 with the schedule when the name is
    new, 200 when it replaced one (keeping its counts, runs and pause)."""
    _check_name(name)
    check_content_type(request.headers.get("content-type"))
    body = await request.body()
    spec = parse_model(ScheduleSpec, body, "invalid schedule")
    now = now_ms()
    if problems := spec.problems(now):
        field, message = problems[0]
        raise InvalidInput(
            f"invalid schedule: field '{field}' {message}", [FieldError(f, m) for f, m in problems]
        )
    job = JobSpec(type=spec.type, payload=spec.payload, then=spec.then)
    check_job(job, runtime.limits, nonfinite=may_hold_nonfinite(body))
    if (principal := principal_of(request.scope)) is not None and not principal.allows(spec.type):
        raise type_refused(principal, spec.type, "schedule")
    store = runtime.schedules
    found = await _redis(runtime, store.states([name]))
    old = found[0] if found else None
    before = None if old is None else Schedule.decode(old.definition)
    if principal is not None and before is not None and not principal.allows(before.spec.type):
        raise type_refused(principal, before.spec.type, "replace schedules of")
    created_at = now if before is None else before.created_at
    schedule = Schedule(name=name, spec=spec, created_at=created_at, updated_at=now)
    next_at = _next(schedule, now, old)
    created = await _redis(runtime, store.put(name, schedule.encode(), next_at))
    state = await _one(name, request, runtime, "see")  # 404 if deleted meanwhile
    return json_response(view(state, now), 201 if created else 200)


@router.get("/schedules", summary="Recurring schedules, with their next run times")
async def list_schedules(
    request: Request,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="the last name of the page before")
    ] = None,
) -> Response:
    """`{"items": [schedule, ...], "next_cursor"}` in name order; pass `next_cursor` as
    `after` for the next page. Each item: `name`, `state` (`active`, `paused`, `ended`), when
    (`cron`, `tz`, `every_ms`), the job's `type` and `priority`, `next_run_at` and
    `next_runs` (RFC 3339), `fired`, `missed`, `last_run_at`."""
    store = runtime.schedules
    names = await _redis(runtime, store.names(after, limit))
    states = await _redis(runtime, store.states(names))
    principal = principal_of(request.scope)
    now = now_ms()
    items = [view(s, now) for s in states]
    if principal is not None:
        items = [i for i in items if principal.allows(i["type"])]
    cursor = names[-1] if len(names) == limit else None
    return json_response({"items": items, "next_cursor": cursor})


@router.get("/schedules/{name}", summary="A schedule, with its last runs and their jobs' states")
async def get_schedule(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """The list's item, plus `spec` (as given) and `runs`: the newest 20 occurrences fired,
    oldest first, `{"occurrence_at", "job_id", "fired_at", "manual"?, "state"}` (the job's
    state now; null once the projection has forgotten it). 404 when unknown."""
    state = await _one(name, request, runtime, "see")
    runs = await _redis(runtime, runtime.schedules.runs(name))
    jobs = await _redis(runtime, asyncio.gather(*(runtime.projection.get(r["job_id"]) for r in runs)))
    for run, job in zip(runs, jobs, strict=True):
        run["state"] = None if job is None else job["state"]
    detail = view(state, now_ms())
    detail["spec"] = Schedule.decode(state.definition).spec.model_dump(mode="json", exclude_none=True)
    detail["runs"] = runs
    return json_response(detail)


@router.delete("/schedules/{name}", summary="Delete a schedule")
async def delete_schedule(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """200 `{"name", "deleted": true}`: no occurrence fires after this (one a scheduler is
    handing to Kafka right now still goes out). 404 when unknown."""
    await _one(name, request, runtime, "delete")
    if not await _redis(runtime, runtime.schedules.delete(name)):
        raise NotFound(f"no schedule named {name}")
    return json_response({"name": name, "deleted": True})


@router.post("/schedules/{name}/pause", summary="Pause a schedule")
async def pause_schedule(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """200 with the schedule, `state: paused`: nothing fires until it is resumed, and the
    occurrences in between are skipped. 404 when unknown."""
    await _one(name, request, runtime, "pause")
    now = now_ms()
    if not await _redis(runtime, runtime.schedules.pause(name, now)):
        raise NotFound(f"no schedule named {name}")
    return json_response(view(await _one(name, request, runtime, "see"), now))


@router.post("/schedules/{name}/resume", summary="Resume a paused schedule")
async def resume_schedule(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """200 with the schedule: it fires again from its next occurrence after now. 404 when unknown."""
    state = await _one(name, request, runtime, "resume")
    now = now_ms()
    next_at = _next(Schedule.decode(state.definition), now, state)
    if not await _redis(runtime, runtime.schedules.resume(name, now, next_at)):
        raise NotFound(f"no schedule named {name}")
    return json_response(view(await _one(name, request, runtime, "see"), now))


@router.post("/schedules/{name}/run", status_code=202, summary="Fire one occurrence now")
async def run_schedule(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """202 `{"name", "job_id", "occurrence_at"}` once Kafka has the job: one occurrence, now,
    besides the schedule's own (it does not count toward `limit`). 404 when unknown; 503
    when Kafka does not take it."""
    state = await _one(name, request, runtime, "run")
    schedule = Schedule.decode(state.definition)
    now = now_ms()
    job_id = occurrence_id(name, now)
    raw = occurrence(schedule.template(), job_id, name, now, now, schedule.spec.ttl_ms)
    try:
        acked = await runtime.firer.fire([raw], now)
    except Exception as exc:
        raise Unavailable("kafka", f"Kafka did not take the occurrence ({exc!r}); retry later") from exc
    if job_id not in acked:
        raise Unavailable("kafka", "Kafka did not acknowledge the occurrence in time; retry later")
    run = {"occurrence_at": now, "job_id": job_id, "fired_at": now, "manual": True}
    await _redis(runtime, runtime.schedules.record_run(name, orjson.dumps(run)))
    return json_response({"name": name, "job_id": job_id, "occurrence_at": now}, 202)


def view(state: ScheduleState, now: int) -> dict[str, Any]:
    """A schedule as the list shows it."""
    schedule = Schedule.decode(state.definition)
    spec = schedule.spec
    status = "paused" if state.paused_at is not None else "ended" if state.next is None else "active"
    upcoming: list[int] = []
    if status == "active" and state.next is not None:
        upcoming.append(state.next)
        while len(upcoming) < NEXT_SHOWN and (t := schedule.timing.after(upcoming[-1])) is not None:
            if spec.limit is not None and state.fired + len(upcoming) >= spec.limit:
                break
            upcoming.append(t)
    return {
        "name": state.name,
        "state": status,
        "cron": spec.cron,
        "tz": spec.tz if spec.cron is not None else None,
        "every_ms": spec.every_ms,
        "type": spec.type,
        "priority": spec.priority.value,
        "catch_up": spec.catch_up,
        "limit": spec.limit,
        "next_run_at": upcoming[0] if upcoming else None,
        "next_runs": [rfc3339(t) for t in upcoming],
        "fired": state.fired,
        "missed": state.missed,
        "last_run_at": state.last,
        "paused_at": state.paused_at,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }


def _next(schedule: Schedule, now: int, state: ScheduleState | None) -> int | None:
    """The first occurrence from now on (not one already fired); None once it has ended."""
    fired, last = (0, None) if state is None else (state.fired, state.last)
    if schedule.spec.limit is not None and fired >= schedule.spec.limit:
        return None
    return schedule.timing.after(max(now - 1, -1 if last is None else last))


async def _one(name: str, request: Request, runtime: Runtime, doing: str) -> ScheduleState:
    """The schedule `name`; 404 when unknown, 403 when the key may not `doing` its type."""
    _check_name(name)
    found = await _redis(runtime, runtime.schedules.states([name]))
    if not found:
        raise NotFound(f"no schedule named {name}")
    job_type = Schedule.decode(found[0].definition).spec.type
    if (principal := principal_of(request.scope)) is not None and not principal.allows(job_type):
        raise type_refused(principal, job_type, f"{doing} schedules of")
    return found[0]


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        error = FieldError("name", "must be 1 to 100 characters: letters, digits, '_', '.' or '-'")
        raise InvalidInput(f"invalid schedule name: {error.message}", [error])


async def _redis(runtime: Runtime, work: Awaitable[T]) -> T:
    return await from_redis(work, runtime.health.retry_after_s, "schedules are", REDIS_TIMEOUT_S)
