"""The OpenAPI document: what each operation takes and every answer it can give.

FastAPI cannot see most of it by itself: `POST /jobs` has no route (`producer.fastpath`
answers it and says what FastAPI would have: `OPERATION`), the batch and replay routes
read their bodies themselves (`producer.inputs`), every error is rendered as `ErrorBody`
rather than FastAPI's validation shape, `/metrics` is Prometheus text, and the routes
answer plain dicts through orjson. So `openapi()` takes FastAPI's document (paths, parameters,
summaries) and sets each operation's request body, header parameters and responses from
`OPERATIONS`, the one table of what the API does (the shapes are `producer.api_shapes`);
FastAPI's own 422 shape is dropped. tests/test_openapi.py fuzzes every operation of the
served document against the real app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from deadletters import ReplayRequest
from jobstream.access.http import api_scope
from producer.api_shapes import (
    Accepted,
    BatchRequest,
    BatchResults,
    Cancel,
    DeadDetail,
    DeadPage,
    DryRun,
    ErrorBody,
    JobEvents,
    JobRecord,
    JobState,
    Live,
    NextDelayed,
    Queues,
    Ready,
    ReplayStarted,
    ReplayStatus,
    ScheduleDeleted,
    ScheduleDetail,
    ScheduleFired,
    ScheduleItem,
    SchedulePage,
)
from producer.fastpath import OPERATION as SUBMIT_ONE
from producer.idempotency_keys import MAX_KEY_CHARS
from producer.routes import JOB_ID_PATTERN
from scheduler.recurring import NAME_PATTERN, ScheduleSpec
from schemas import JobSpec

__all__ = ["OPERATIONS", "openapi"]


_ERRORS = {
    400: "the body is not valid JSON",
    401: "with JOBSTREAM_AUTH=required: no API key, or one unknown or revoked (`Authorization: Bearer`)",
    403: "a browser page on another site (its Origin is not in JOBSTREAM_CORS_ORIGINS), or a key "
    "without the scope or the job type this needs",
    404: "not found",
    409: "a conflict: see `detail`",
    413: "over a limit: body, batch, payload or the job as a Kafka record (`limit`)",
    415: "the body is not sent as application/json",
    422: "a field is wrong: `errors` names each",
    503: "Kafka or Redis is unavailable (`service`): retry after `Retry-After` seconds",
}
_TEXT = "text/plain"


@dataclass(frozen=True)
class Operation:
    """What one operation takes and answers: status -> model (or `_TEXT`) and description."""

    ok: dict[int, tuple[type[BaseModel] | str, str]]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: dict[str, dict[str, Any]] = field(default_factory=dict)  # path parameters' schemas


_SUBMIT_ERRORS = (400, 403, 413, 415, 422, 503)
_JOB_ID = {"job_id": {"type": "string", "pattern": JOB_ID_PATTERN}}
_NAME = {"name": {"type": "string", "pattern": NAME_PATTERN}}
_TRACEPARENT = {"description": "W3C trace context, carried by every job made", "schema": {"type": "string"}}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/jobs"): Operation(
        {202: (Accepted, "accepted: in Kafka (`queued`) or in Redis (`scheduled`)"),
         200: (Accepted, "a repeat of an idempotency key: the first job")},
        (*_SUBMIT_ERRORS, 409), JobSpec,
        headers={
            "Idempotency-Key": {
                "description": "repeat the request safely: a repeat answers 200 with the first job",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
            },
            "traceparent": _TRACEPARENT,
        },
    ),
    ("post", "/jobs/batch"): Operation(
        {200: (BatchResults, "one row per item: accepted or why not")}, _SUBMIT_ERRORS, BatchRequest,
        headers={"traceparent": _TRACEPARENT},
    ),
    ("get", "/jobs/{job_id}"): Operation(
        {200: (JobState, "the job's latest state")}, (403, 404, 422, 503), path=_JOB_ID
    ),
    ("delete", "/jobs/{job_id}"): Operation(
        {200: (Cancel, "removed before it was due"), 202: (Cancel, "every worker is told to cancel it")},
        (403, 404, 409, 422, 503), path=_JOB_ID,
    ),
    ("get", "/jobs/{job_id}/events"): Operation(
        {200: (JobEvents, "the job's newest 50 events, oldest first")}, (403, 404, 422, 503), path=_JOB_ID
    ),
    ("get", "/jobs/{job_id}/record"): Operation(
        {200: (JobRecord, "the job as submitted")}, (403, 404, 422, 503), path=_JOB_ID
    ),
    ("get", "/queues"): Operation({200: (Queues, "depths")}, (403, 503)),
    ("get", "/delayed"): Operation(
        {200: (NextDelayed, "the next delayed jobs, soonest first")}, (403, 422, 503)
    ),
    ("get", "/healthz"): Operation({200: (Live, "alive")}, (403,)),
    ("get", "/readyz"): Operation(
        {200: (Ready, "Kafka and Redis reachable"), 503: (Ready, "not ready: `detail` says what is down")},
        (403,),
    ),
    ("get", "/metrics"): Operation({200: (_TEXT, "Prometheus text format")}, (403,)),
    ("get", "/dlq"): Operation({200: (DeadPage, "a page, newest first")}, (403, 422, 503)),
    ("get", "/dlq/replays/{replay_id}"): Operation(
        {200: (ReplayStatus, "the replay's progress")}, (403, 404, 503)
    ),
    ("get", "/dlq/{dead_id}"): Operation({200: (DeadDetail, "the record in full")}, (403, 404, 503)),
    ("post", "/dlq/replay"): Operation(
        {200: (DryRun, "dry run: what would be replayed"), 202: (ReplayStarted, "replay started")},
        _SUBMIT_ERRORS, ReplayRequest, body_required=False,
    ),
    ("put", "/schedules/{name}"): Operation(
        {201: (ScheduleItem, "a new schedule"), 200: (ScheduleItem, "the schedule of that name, replaced")},
        (400, 403, 413, 415, 422, 503), ScheduleSpec, path=_NAME,
    ),
    ("get", "/schedules"): Operation({200: (SchedulePage, "a page, in name order")}, (403, 422, 503)),
    ("get", "/schedules/{name}"): Operation(
        {200: (ScheduleDetail, "the schedule, its spec and last runs")}, (403, 404, 422, 503), path=_NAME
    ),
    ("delete", "/schedules/{name}"): Operation(
        {200: (ScheduleDeleted, "deleted")}, (403, 404, 422, 503), path=_NAME
    ),
    ("post", "/schedules/{name}/pause"): Operation(
        {200: (ScheduleItem, "paused")}, (403, 404, 422, 503), path=_NAME
    ),
    ("post", "/schedules/{name}/resume"): Operation(
        {200: (ScheduleItem, "firing again from its next occurrence")}, (403, 404, 422, 503), path=_NAME
    ),
    ("post", "/schedules/{name}/run"): Operation(
        {202: (ScheduleFired, "one occurrence, now, in Kafka")}, (403, 404, 422, 503), path=_NAME
    ),
}  # fmt: skip


def openapi(app: FastAPI) -> dict[str, Any]:
    """The document of `app` (built once, then cached on the app as FastAPI does)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    paths = doc["paths"]
    doc["paths"] = {"/jobs": {"post": dict(SUBMIT_ONE), **paths.get("/jobs", {})}, **paths}
    models: set[type[BaseModel]] = {ErrorBody}
    for op in OPERATIONS.values():
        models.update(m for m, _ in op.ok.values() if not isinstance(m, str))
        if op.body is not None:
            models.add(op.body)
    bodies = {op.body for op in OPERATIONS.values()}  # what clients send: their input shape
    _, defs = models_json_schema(
        [(m, "validation" if m in bodies else "serialization") for m in sorted(models, key=str)],
        ref_template="#/components/schemas/{model}",
    )
    components = doc.setdefault("components", {})
    fastapis = components.get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # a shape this API never sends
        fastapis.pop(name, None)
    components["schemas"] = {**fastapis, **defs.get("$defs", {})}
    components["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key (`jobstream keys create`), "
                   "asked for when the server runs with JOBSTREAM_AUTH=required"}
    }  # fmt: skip
    for (method, path), op in OPERATIONS.items():
        operation = doc["paths"][path][method]
        _describe(operation, op)
        if (scope := api_scope(method.upper(), path)) is not None:
            operation["security"] = [{"apiKey": []}]
            operation["responses"]["401"] = {"description": _ERRORS[401], "content": _json(ErrorBody)}
            operation["description"] = (
                f"{operation.get('description', '')}\n\nAPI key scope: `{scope}`.".strip()
            )
    app.openapi_schema = doc
    return doc


def _describe(operation: dict[str, Any], op: Operation) -> None:
    responses: dict[str, Any] = {}
    for status, (model, description) in op.ok.items():
        if isinstance(model, str):
            content = {model: {"schema": {"type": "string"}}}
            responses[str(status)] = {"description": description, "content": content}
        else:
            responses[str(status)] = {"description": description, "content": _json(model)}
    for status in op.errors:
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(ErrorBody)}
    if "503" in responses:
        responses["503"]["headers"] = {
            "Retry-After": {"description": "seconds", "schema": {"type": "integer"}, "required": True}
        }
    operation["responses"] = responses
    params = [p for p in operation.get("parameters", []) if p["in"] != "header"]
    for p in params:
        if p["in"] == "path" and p["name"] in op.path:
            p["schema"] = op.path[p["name"]]
    params += [{"name": name, "in": "header", "required": False, **spec} for name, spec in op.headers.items()]
    if params:
        operation["parameters"] = params
    if op.body is not None:
        operation["requestBody"] = {"required": op.body_required, "content": _json(op.body)}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
