"""The gateway's FastAPI app: `/ws`, the dashboard, health, readiness, metrics and job lookup.

Everything long-lived belongs to one `Gateway`, opened by the lifespan and reached by
routes through the `GatewayDep` dependency; nothing lives at module level. A `/ws`
handshake from a page on another site (its `Origin` not allowed by `cors_origins`,
`jobstream.origins`) is refused with 403 before it is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from gateway import metrics, session
from gateway.dashboard import DASHBOARD_HTML
from gateway.service import Gateway
from gateway.signals import drain_on_signal
from jobstream.settings import GatewaySettings

log = logging.getLogger("jobstream.gateway.ws")


def get_gateway(conn: HTTPConnection) -> Gateway:
    gateway: Gateway = conn.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def create_app(settings: GatewaySettings) -> FastAPI:
    """Build the app; Kafka and Redis are opened by its lifespan, not here."""
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with gateway:
            with drain_on_signal(gateway.drain):
                yield {"gateway": gateway}

    app = FastAPI(title="jobstream gateway", lifespan=lifespan)
    app.state.gateway = gateway  # for introspection (tests, debugging); routes use GatewayDep

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz")
    async def readyz(gw: GatewayDep) -> JSONResponse:
        checks = await gw.readiness()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(checks, status_code=200 if ok else 503)

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str, gw: GatewayDep) -> dict[str, Any]:
        try:
            state = await gw.projection.get(job_id)
        except (RedisError, OSError):
            raise HTTPException(
                503, "job states are unavailable: Redis does not answer", headers={"Retry-After": "1"}
            ) from None
        if state is None:
            raise HTTPException(404, f"job {job_id} is not known (never seen, or expired)")
        return state

    registry = metrics.registry_for(gateway.hub)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD_HTML)

    allowed = settings.allowed_origins

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, gw: GatewayDep) -> None:
        origin = websocket.headers.get("origin")
        if not allowed.allows(origin, websocket.headers.get("host")):
            # closing before accepting refuses the handshake: the browser sees HTTP 403
            log.info("ws refused origin=%s (not in JOBSTREAM_CORS_ORIGINS)", origin)
            await websocket.close(code=1008, reason="origin not allowed")
            return
        await session.serve(websocket, gw)

    return app
