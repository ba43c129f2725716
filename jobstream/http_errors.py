"""Errors the API answers with, their JSON shape, and the handlers that render them.

Shared by the producer API and the routers of the subsystems it mounts (dead letters),
so every route answers the same shapes; `check_content_type` and `parse_model` are the body
checks they share, `from_redis` the way a Redis outage becomes a 503.

ApiError                      every error a client can cause or a backing service can;
 │                            rendered as {"detail": "<sentence>", ...extra}
 ├── BadRequest (400)
 │    └── InvalidJson         the body does not parse as JSON
 ├── Forbidden (403)
 │    └── CrossOrigin         a browser page on another site, not in cors_origins
 ├── NotFound (404)
 ├── Conflict (409)
 ├── TooLarge (413)           body, payload, record or batch over a configured limit
 ├── UnsupportedMediaType (415)
 ├── InvalidInput (422)       carries "errors": [{"field", "message"}, ...]
 └── Unavailable (503)        carries Retry-After and the service that is down

Anything else escaping a route is a bug: `CatchAllMiddleware` logs its traceback and
answers a plain 500 without details, and never re-raises into the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jobstream.http_responses import TrackedSend, json_response

log = logging.getLogger("jobstream.producer")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class ApiError(Exception):
    """Base of every error the API renders itself. `reason` labels the rejection metric."""

    status = 500
    reason = "error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}

    def response(self) -> Response:
        return json_response(self.body(), self.status, headers=self.headers)


class BadRequest(ApiError):
    status = 400
    reason = "bad_request"


class InvalidJson(BadRequest):
    reason = "invalid_json"


class Forbidden(ApiError):
    status = 403
    reason = "forbidden"


class CrossOrigin(Forbidden):
    reason = "cross_origin"

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"requests from pages on {origin} are not allowed: browsers may call this API only "
            "from its own origin and those listed in JOBSTREAM_CORS_ORIGINS"
        )


class NotFound(ApiError):
    status = 404
    reason = "not_found"


class Conflict(ApiError):
    status = 409
    reason = "conflict"


class TooLarge(ApiError):
    """Over `limit`; `errors` names the field when one is to blame."""

    status = 413
    reason = "too_large"

    def __init__(self, detail: str, *, limit: int, errors: Sequence[FieldError] = ()) -> None:
        extra: dict[str, Any] = {"limit": limit}
        if errors:
            extra["errors"] = [e.as_dict() for e in errors]
        super().__init__(detail, **extra)
        self.errors = list(errors)


class UnsupportedMediaType(ApiError):
    status = 415
    reason = "media_type"


class InvalidInput(ApiError):
    status = 422
    reason = "invalid"

    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail, errors=[e.as_dict() for e in errors])
        self.errors = errors


class Unavailable(ApiError):
    """A backing service is down: the client should retry after `retry_after` seconds."""

    status = 503
    reason = "unavailable"

    def __init__(self, service: str, detail: str, *, retry_after: int = 2) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, service=service)
        self.service = service
        self.reason = f"{service}_down"


def check_content_type(value: str | None) -> None:
    """Accept JSON (`application/json`, `application/*+json`) and nothing else, no content
    type included: a body without one is what an HTML form or a plain cross-site `fetch`
    sends, and those must not be able to submit jobs."""
    if value is None:
        raise UnsupportedMediaType("a request body needs the header Content-Type: application/json")
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"content type '{media}' is not supported: send application/json")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason an input was refused: which field, and why, in words."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one batch item was refused; rendered as the item's `error`."""

    status: int
    message: str
    errors: list[FieldError] = field(default_factory=list)

    @classmethod
    def of(cls, exc: InvalidInput | TooLarge) -> ItemError:
        return cls(exc.status, exc.detail, exc.errors)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.errors:
            out["errors"] = [e.as_dict() for e in self.errors]
        return out


# pydantic's messages, reworded where they would puzzle a client.
_MESSAGES = {
    "extra_forbidden": "is not a known field",
    "missing": "is required",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
}


def parse_model(model: type[M], body: bytes, what: str) -> M:
    """`body` as a `model`: 400 for JSON that does not parse, else 422 naming each wrong
    field (`what` starts the sentence: "invalid schedule")."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidJson(f"request body is not valid JSON: {errors[0]['ctx']['error']}") from None
        raise InvalidInput(*describe_errors(errors, what)) from None


async def from_redis(work: Awaitable[T], retry_after: int, what: str, timeout_s: float = 2.0) -> T:
    """Await a step Redis answers; an outage (or no answer within `timeout_s`) becomes 503
    naming Redis and `what` is unavailable, with Retry-After."""
    try:
        return await asyncio.wait_for(work, timeout_s)
    except (RedisError, OSError, TimeoutError) as exc:
        raise Unavailable(
            "redis", f"Redis is unreachable: {what} unavailable", retry_after=retry_after
        ) from exc


def describe_errors(
    errors: Sequence[Any], what: str, *, strip: tuple[str, ...] = ()
) -> tuple[str, list[FieldError]]:
    """Turn pydantic error dicts into a sentence and one `FieldError` per problem.

    `strip` drops leading location parts that mean nothing to a client ("body").
    """
    out: list[FieldError] = []
    for err in errors:
        loc = list(err.get("loc", ()))
        while loc and loc[0] in strip:
            loc.pop(0)
        field = ".".join(str(p) for p in loc) or "body"
        kind = err.get("type", "")
        if kind == "string_pattern_mismatch":
            message = f"must match {err.get('ctx', {}).get('pattern', 'the allowed pattern')}"
        elif kind == "enum":
            message = f"must be one of {err.get('ctx', {}).get('expected', 'the allowed values')}"
        else:
            message = _MESSAGES.get(kind) or str(err.get("msg", "is not valid"))
        out.append(FieldError(field, message))
    if not out:
        return f"{what}: the input is not valid", out
    first = out[0]
    more = f" (and {len(out) - 1} more problem{'s' if len(out) > 2 else ''})" if len(out) > 1 else ""
    return f"{what}: field '{first.field}' {first.message}{more}", out


OnReject = Callable[[str], None]


def install_handlers(app: FastAPI, on_reject: OnReject) -> None:
    """Render `ApiError`, request-validation errors and Starlette's HTTP errors as JSON."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        on_reject(exc.reason)
        return exc.response()

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        on_reject(InvalidInput.reason)
        detail, errors = describe_errors(exc.errors(), "invalid request", strip=("body", "path", "query"))
        return InvalidInput(detail, errors).response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return json_response({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


class CatchAllMiddleware:
    """Turns an unhandled exception into a logged traceback and a clean 500 JSON.

    Only genuine bugs get here: every bad input is an `ApiError` rendered further in.
    If the response had already started, the connection is simply dropped by re-raising.
    A client that disconnects (or is timed out) before its body arrived is not a bug: the
    request ends there, unanswered.
    """

    def __init__(self, app: ASGIApp, on_bug: Callable[[], None]) -> None:
        self.app = app
        self.on_bug = on_bug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:  # left, or timed out, mid-body: no one to answer, and no bug
            log.debug("client left mid-request method=%s path=%s", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unhandled error method=%s path=%s", scope.get("method"), scope.get("path"))
            self.on_bug()
            if tracked.started:
                raise
            await json_response({"detail": "internal server error"}, 500)(scope, receive, send)
