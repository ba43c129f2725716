"""Request-body size limit, as a small ASGI middleware.

A declared `Content-Length` over the limit is refused before a byte of the body is read.
A body without one (chunked) is counted while the app reads it: the read that crosses the
limit raises `BodyTooLarge`, which the app renders as 413 like any other `ApiError`; if
it escapes the app before a response started, the middleware answers 413 itself.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstream.http_errors import TooLarge
from jobstream.http_responses import TrackedSend


class BodyTooLarge(TooLarge):
    reason = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body is larger than {limit} bytes (max_body_bytes)",
            limit=limit,
        )


class BodyLimitMiddleware:
    """Refuses HTTP request bodies larger than `max_bytes` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if tracked.started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = BodyTooLarge(self.max_bytes)
        if self.on_reject is not None:
            self.on_reject(exc.reason)
        response = exc.response()
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
