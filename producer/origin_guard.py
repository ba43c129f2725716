"""Refusing browser requests from other sites, as a small ASGI middleware.

CORS headers only tell a browser whether a page may *read* an answer: a simple
cross-site POST is still sent and acted on. So before anything else runs, a request
whose `Origin` the allow-list does not allow (`jobstream.origins`) is answered 403 with
a JSON sentence naming the origin; nothing is parsed, claimed or sent. Requests without
`Origin` (programs, the CLI) and from the API's own origin go on untouched. With origins
configured, Starlette's `CORSMiddleware` (inside this one) answers their preflights and
adds the CORS headers.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from jobstream.http_errors import CrossOrigin
from jobstream.origins import AllowedOrigins


class OriginGuard:
    def __init__(self, app: ASGIApp, allowed: AllowedOrigins, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.allowed = allowed
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = host = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value.decode("latin-1")
                elif name == b"host":
                    host = value.decode("latin-1")
            if not self.allowed.allows(origin, host):
                assert origin is not None
                exc = CrossOrigin(origin)
                self.on_reject(exc.reason)
                await exc.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
