"""`POST /jobs` without the framework's routing, request objects and dependency solving.

One job per request is the API's hottest path, and most of its CPU went to FastAPI and
Starlette around a few lines of work. This ASGI middleware answers exactly that request
itself, with the same function the route uses (`producer.routes.submit_one`) and the same
error rendering; every other request goes on to the app. It sits inside the body-size
limit and the catch-all, so those still apply.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstream.http_errors import ApiError
from producer.routes import submit_one


class FastSubmit:
    def __init__(self, app: ASGIApp, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/jobs":
            await self.app(scope, receive, send)
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
            response = await submit_one(scope["state"]["runtime"], content_type, idem_key, body, traceparent)
        except ApiError as exc:
            self._on_reject(exc.reason)
            response = exc.response()
        await response(scope, receive, send)


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
