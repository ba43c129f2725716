"""The dead-letter routes: browse (`GET /dlq`, `GET /dlq/{id}`) and replay.

Everything here reads the Redis index the `DlqIndexer` keeps, so a record shows up a
moment after it reaches the dead-letter topic. With Redis down these routes answer 503.
The app that mounts `router` keeps the parts (`open_dead_letters()`) in its lifespan state
as `dead_letters`; the routes reach them through `DeadLettersDep`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from typing import Annotated, TypeVar, cast

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from deadletters.cursor import Position, decode_cursor, encode_cursor
from deadletters.query import MAX_Q_CHARS, DlqFilter, ReplayRequest, build_filter, detail, summary
from deadletters.replay_run import ReplayOptions
from deadletters.service import DeadLetters
from jobstream.access.http import principal_of, type_refused
from jobstream.cursor import CursorError
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
from schemas import DeadReason
from schemas.job import JobType


async def _dead_letters(request: Request) -> DeadLetters:
    return cast(DeadLetters, request.state.dead_letters)


DeadLettersDep = Annotated[DeadLetters, Depends(_dead_letters)]

router = APIRouter(prefix="/dlq", tags=["dead letters"])

REDIS_TIMEOUT_S = 30.0
T = TypeVar("T")


@router.get("", summary="Browse dead letters, newest first")
async def list_dead(
    request: Request,
    letters: DeadLettersDep,
    types: Annotated[list[JobType], Query(alias="type")] = [],  # noqa: B006 (FastAPI copies it)
    reasons: Annotated[list[DeadReason], Query(alias="reason")] = [],  # noqa: B006
    since: str | None = None,
    until: str | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=MAX_Q_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """`{"items": [{"id", "type", "reason", "dead_at", "attempts", "last_error", "source",
    "replayed_by"}], "next_cursor"}`; pass `next_cursor` back as `cursor` for the next page."""
    flt = within_key(
        request, build_filter(types=types, reasons=reasons, since=since, until=until, q=q), "see"
    )
    after: Position | None = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except CursorError as exc:
            raise InvalidInput(
                f"invalid filter: field 'cursor' {exc.reason}", [FieldError("cursor", exc.reason)]
            ) from None
    store = letters.store
    page = await _redis(letters, store.page(flt, limit, after))
    claims, _ = await _redis(letters, store.replay_marks([d.id for d in page.items]))
    items = [summary(d, by) for d, by in zip(page.items, claims, strict=True)]
    next_cursor = encode_cursor(page.next) if page.next is not None else None
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get("/replays/{replay_id}", summary="A replay's progress")
async def get_replay(replay_id: str, letters: DeadLettersDep) -> Response:
    """`{"replay_id", "state", "matched", "replayed", "skipped", "skipped_by_reason",
    "failed", "error", "started_at", "finished_at", "filter", "options"}`; 404 if unknown."""
    status = await _redis(letters, letters.replayer.status(replay_id))
    if status is None:
        raise NotFound(f"no replay with id {replay_id}")
    return json_response(status)


@router.get("/{dead_id}", summary="One dead letter in full")
async def get_dead(dead_id: str, request: Request, letters: DeadLettersDep) -> Response:
    """The record (`job`, `raw` for poison, every attempt's `errors`, `source`) with
    `replayed_by` (replay id) and `replayed_as` (the new job's id); 404 if unknown."""
    store = letters.store
    dead = await _redis(letters, store.get(dead_id))
    if dead is None:
        raise NotFound(f"no dead letter with id {dead_id}")
    if (principal := principal_of(request.scope)) is not None and not principal.allows(dead.type or ""):
        raise type_refused(principal, dead.type or "", "see")
    claims, news = await _redis(letters, store.replay_marks([dead_id]))
    return json_response(detail(dead, claims[0], news[0]))


@router.post("/replay", summary="Count (dry run) or replay dead letters")
async def replay(request: Request, letters: DeadLettersDep) -> Response:
    """Body: `{"types", "reasons", "ids", "since", "until", "q", "dry_run": true, "priority",
    "rate", "force"}`. Dry run: 200 `{"matched", "sample"}`. Else 202 `{"replay_id",
    "matched"}`; follow it at `GET /dlq/replays/{replay_id}`."""
    check_content_type(request.headers.get("content-type"))
    body = await request.body()
    req = parse_model(ReplayRequest, body or b"{}", "invalid replay")
    flt = within_key(request, req.to_filter(), "replay")
    replayer = letters.replayer
    ids, sample = await _redis(letters, replayer.select(flt))
    if req.dry_run:
        return json_response({"matched": len(ids), "sample": sample})
    if not letters.health.is_up("kafka"):
        raise Unavailable("kafka", "Kafka is unreachable: nothing was replayed", retry_after=2)
    options = ReplayOptions(priority=req.priority, rate=req.rate, force=req.force)
    replay_id = await _redis(letters, replayer.launch(flt, options, ids))
    return json_response({"replay_id": replay_id, "matched": len(ids)}, 202)


def within_key(request: Request, flt: DlqFilter, doing: str) -> DlqFilter:
    """`flt` narrowed to the request's key's job types; 403 for a type it names outside them."""
    principal = principal_of(request.scope)
    if principal is None or not principal.limited:
        return flt
    for job_type in sorted(flt.types):
        if not principal.allows(job_type):
            raise type_refused(principal, job_type, doing)
    return dataclasses.replace(flt, patterns=principal.types)


async def _redis(letters: DeadLetters, work: Awaitable[T]) -> T:
    """Await a Redis-backed step; a Redis outage becomes 503 with Retry-After."""
    return await from_redis(work, letters.health.retry_after_s, "the dead-letter index is", REDIS_TIMEOUT_S)
