"""`POST /jobs`, answered without the framework's routing, request objects and dependency solving.

One job per request is the API's hottest path, and most of its CPU went to FastAPI and
Starlette around a few lines of work. This ASGI middleware answers every such request
itself (`submit_one`), with the app's error rendering; every other request goes on to the
app. It sits inside the body-size limit and the catch-all, so those still apply; a request
without `Origin` reaches it through those two alone, ahead of the framework's stack
(`producer.app.ApiApp`). No route
serves `POST /jobs`: `producer.openapi` documents it from `OPERATION` here, and the
middleware answers what the router would for a route there (405 to another method, a
redirect from `/jobs/`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.datastructures import URL
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstream.access.http import principal_of, type_refused
from jobstream.access.keys import Principal
from jobstream.http_errors import ApiError, Conflict, TooLarge, Unavailable, check_content_type
from jobstream.http_responses import json_response
from producer.idempotency_keys import with_header
from producer.inputs import parse_job
from producer.results import Refused
from producer.runtime import Runtime
from producer.trace import use_traceparent

# What FastAPI would say of the operation (a route named `submit_job`); `producer.openapi`
# adds what it takes and answers.
OPERATION: dict[str, Any] = {
    "summary": "Submit one job",
    "description": """Body: a job spec (`type`, optional `payload`, `priority`, `key`, `max_attempts`,
`timeout_s`, `backoff`, `idempotency_key`, `delay_ms` or `run_at`). 202 `{"id", "state":
"queued"}` once Kafka has the job, or `{"id", "state": "scheduled", "run_at"}` once Redis
has a job due later; with an `Idempotency-Key` header or field, a repeat answers 200 `{"id",
"state", "duplicate": true}` with the first job, and 409 if the key came with another body.""",
    "operationId": "submit_job_jobs_post",
}


class FastSubmit:
    def __init__(self, app: ASGIApp, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/jobs":
            await (_elsewhere(scope) or self.app)(scope, receive, send)
            return
        content_type = idem_key = traceparent = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"idempotency-key":
                idem_key = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        body = await _body(receive)
        if body is None:
            return  # the client left (or timed out) before its body arrived: nothing to submit
        try:
            response = await submit_one(
                scope["state"]["runtime"], content_type, idem_key, body, traceparent, principal_of(scope)
            )
        except ApiError as exc:
            self._on_reject(exc.reason)
            response = exc.response()
        await response(scope, receive, send)


def _elsewhere(scope: Scope) -> Response | None:
    """The router's answer to a request for `/jobs` that is not `POST /jobs`; None: not one."""
    if scope["type"] != "http":
        return None
    if scope["path"] == "/jobs":
        return json_response({"detail": "Method Not Allowed"}, 405, headers={"Allow": "POST"})
    if scope["path"] == "/jobs/":
        return RedirectResponse(URL(scope={**scope, "path": "/jobs"}), 307)
    return None


async def submit_one(
    runtime: Runtime,
    content_type: str | None,
    idem_key: str | None,
    raw: bytes,
    traceparent: str | None = None,
    principal: Principal | None = None,
) -> Response:
    """The answer to one `POST /jobs` (see `OPERATION`); raises `ApiError` for an error answer.
    `principal`: the key's, when keys are required (its types are checked here)."""
    started = time.perf_counter()
    check_content_type(content_type)
    use_traceparent(traceparent)
    spec = with_header(parse_job(raw, runtime.limits), idem_key)
    if principal is not None and not principal.allows(spec.type):
        raise type_refused(principal, spec.type, "submit")
    if spec.idempotency_key is None:
        results = await runtime.submitter.submit_many((spec,))
    else:  # 200 with the first job for a repeat
        results = await runtime.deduplicator.submit_many((spec,))
    result = results[0]
    if isinstance(result, Refused):
        raise _refusal(runtime, result)
    body: dict[str, Any] = {"id": result.id, "state": result.state}
    if result.run_at is not None:
        body["run_at"] = result.run_at
    if result.duplicate:
        body["duplicate"] = True
    runtime.metrics.observe_latency("single", time.perf_counter() - started)
    return json_response(body, 200 if result.duplicate else 202)


def _refusal(runtime: Runtime, refused: Refused) -> ApiError:
    """A single job's refusal as its error answer."""
    status, message = refused.error.status, refused.error.message
    if status == 413:  # Kafka refused the record: too large
        return TooLarge(message, limit=runtime.settings.max_record_bytes)
    if status == 409:  # the key came with another body, or its first request is unfinished
        return Conflict(message)
    return Unavailable(
        "kafka", f"{message}; the job was not accepted, retry later", retry_after=runtime.health.retry_after_s
    )


async def _body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected before it all arrived."""
    chunks: list[bytes] = []
    more = True
    while more:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
