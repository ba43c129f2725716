"""`create_app()`: the FastAPI app of the producer API.

One app per `ApiSettings`. Its lifespan opens the clients (`producer.runtime`) and hands
them to the routes as lifespan state; besides its own routes it mounts the dead letters'
router (`deadletters.router`). Nothing is opened at import time, so tests can build as
many apps as they like in one process, each with its own metrics registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from deadletters import router as dlq_router
from jobstream.access import announce
from jobstream.access.http import RequireKey, api_scope
from jobstream.access.ring import KeyRing
from jobstream.http_errors import CatchAllMiddleware, install_handlers
from jobstream.settings import ApiSettings
from producer.fastpath import FastSubmit
from producer.limits import BodyLimitMiddleware
from producer.metrics import Metrics
from producer.openapi import openapi
from producer.origin_guard import OriginGuard
from producer.routes import router
from producer.runtime import open_runtime
from producer.schedules import router as schedules_router


class ApiApp(FastAPI):
    """The API's app. `POST /jobs` from a program (no `Origin` header: not a browser) is
    answered ahead of the framework's stack, through the same catch-all, size limit and
    fast path as inside it: the eight layers around it (FastAPI's, Starlette's and ours)
    cost a seventh of the API's CPU per single submit. With no `Origin` the origin guard
    and CORS have nothing to do. Every other request, and browser ones, take the stack.
    """

    front: ASGIApp | None = None  # set by `create_app`

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.front is not None
            and scope["type"] == "http"
            and scope["path"] == "/jobs"
            and scope["method"] == "POST"
            and not any(name == b"origin" for name, _ in scope["headers"])
        ):
            await self.front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the app; clients open when its lifespan starts and close when it ends."""
    metrics = Metrics()
    ring = KeyRing.of(settings) if settings.auth == "required" else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        announce(settings, "API")
        async with open_runtime(settings, metrics) as runtime:
            if ring is not None:
                ring.connect(runtime.redis)
            yield {"runtime": runtime, "dead_letters": runtime.dead_letters}

    app = ApiApp(
        title="jobstream producer",
        summary="Submit jobs to Kafka and look up their state.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(dlq_router)
    app.include_router(schedules_router)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    install_handlers(app, metrics.count_rejected)
    # Added last = outermost: the catch-all wraps the origin guard, which wraps CORS (when
    # origins are allowed), the key check (when keys are required), the size limit, the
    # fast path for POST /jobs, and the routes. `front` is the same chain without the guard
    # and CORS, for POST /jobs without Origin.
    app.add_middleware(FastSubmit, on_reject=metrics.count_rejected)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, on_reject=metrics.count_rejected
    )
    if ring is not None:
        app.add_middleware(RequireKey, ring=ring, rule=api_scope, on_reject=metrics.count_rejected)
    allowed = settings.allowed_origins
    if allowed:  # with none, every cross-site request is refused: no preflight to answer
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allowed.listed(),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["content-type", "idempotency-key", "traceparent", "authorization"],
            expose_headers=["retry-after"],
            max_age=600,
        )
    app.add_middleware(OriginGuard, allowed=allowed, on_reject=metrics.count_rejected)
    app.add_middleware(CatchAllMiddleware, on_bug=metrics.internal_errors.inc)
    fast = FastSubmit(app, on_reject=metrics.count_rejected)  # `app`: never reached from here
    front: ASGIApp = BodyLimitMiddleware(
        fast, max_bytes=settings.max_body_bytes, on_reject=metrics.count_rejected
    )
    if ring is not None:
        front = RequireKey(front, ring, api_scope, metrics.count_rejected)
    app.front = CatchAllMiddleware(front, on_bug=metrics.internal_errors.inc)
    return app
