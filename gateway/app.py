"""The gateway's FastAPI app: `/ws`, the dashboard, health, readiness, metrics, job lookup,
and `/asyncapi.json`, the AsyncAPI document of `/ws` and the topics (`gateway.asyncapi`).

The dashboard is static files in `gateway/dashboard/` (no build step): `/` is its page,
`/dashboard/*` its modules, and `/dashboard/config.json` tells it where the API is
(`DASHBOARD_API_URL`; the API must allow this gateway's origin in `CORS_ORIGINS`).

Everything long-lived belongs to one `Gateway`, opened by the lifespan and reached by
routes through the `GatewayDep` dependency; nothing lives at module level. A `/ws`
handshake from a page on another site (its `Origin` not allowed by `cors_origins`,
`jobstream.origins`) is refused with 403 before it is accepted. With API keys required,
`RequireKey` admits HTTP requests (the dashboard's files stay open) and `gateway.session`
admits WebSocket connections; `POST /ws-token` gives browsers a one-time token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection, Request

from gateway import metrics, session
from gateway.service import Gateway
from gateway.signals import drain_on_signal
from jobstream.access import announce
from jobstream.access.http import RequireKey, gateway_scope, principal_of, type_refused
from jobstream.access.ring import KeysUnavailable
from jobstream.presence import read_workers
from jobstream.settings import GatewaySettings

log = logging.getLogger("jobstream.gateway.ws")

DASHBOARD = Path(__file__).parent / "dashboard"  # static files: HTML, CSS, JS modules


def get_gateway(conn: HTTPConnection) -> Gateway:
    gateway: Gateway = conn.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def create_app(settings: GatewaySettings) -> FastAPI:
    """Build the app; Kafka and Redis are opened by its lifespan, not here."""
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        announce(settings, "gateway")
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
    async def get_job(job_id: str, request: Request, gw: GatewayDep) -> dict[str, Any]:
        try:
            state = await gw.projection.get(job_id)
        except (RedisError, OSError):
            raise HTTPException(
                503, "job states are unavailable: Redis does not answer", headers={"Retry-After": "1"}
            ) from None
        if state is None:
            raise HTTPException(404, f"job {job_id} is not known (never seen, or expired)")
        principal = principal_of(request.scope)
        if principal is not None and not principal.allows(state.get("type") or ""):
            raise HTTPException(403, type_refused(principal, state.get("type") or "", "see").detail)
        return state

    @app.get("/workers")
    async def workers(gw: GatewayDep) -> dict[str, Any]:
        """`{"workers": [{"id", "app", "host", "pid", "concurrency", "running", "buffered",
        "paused", "partitions", "types", "started_at", "at"}]}`: each worker whose last
        heartbeat (every 2 s) is younger than the group's session timeout."""
        try:
            found = await read_workers(gw.redis, settings.redis_prefix)
        except (RedisError, OSError) as exc:
            raise HTTPException(
                503, f"workers are unknown: Redis does not answer ({exc})", headers={"Retry-After": "1"}
            ) from None
        return {"workers": found}

    @app.post("/ws-token", status_code=201)
    async def ws_token(request: Request, gw: GatewayDep) -> JSONResponse:
        """`{"token", "expires_in"}`: a one-time token for `/ws?token=...`, standing for the
        request's key, for browsers (which cannot set headers on a WebSocket)."""
        principal = principal_of(request.scope)
        if gw.keys is None or principal is None:
            raise HTTPException(
                404, "this gateway requires no API key (JOBSTREAM_AUTH=off): connect to /ws directly"
            )
        ttl = settings.ws_token_ttl_s
        try:
            token = await gw.keys.issue_token(principal, ttl)
        except KeysUnavailable as exc:
            raise HTTPException(
                503, f"no token can be made now: {exc}", headers={"Retry-After": "1"}
            ) from None
        return JSONResponse({"token": token, "expires_in": ttl}, status_code=201)

    registry = metrics.registry_for(gateway.hub)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)

    asyncapi_json: list[bytes] = []  # built on the first request (about 10 ms), then kept

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> Response:
        """The AsyncAPI document, with this deployment's topic names; open like /docs."""
        if not asyncapi_json:
            # imported here: `python -m gateway.asyncapi` imports this package before that module
            from gateway.asyncapi import asyncapi_document

            asyncapi_json.append(orjson.dumps(asyncapi_document(settings.topic_prefix)))
        return Response(asyncapi_json[0], media_type="application/json")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    @app.get("/dashboard/config.json", include_in_schema=False)
    async def dashboard_config() -> dict[str, Any]:
        """Where the dashboard finds the API, and whether it must ask for a key."""
        return {"api": settings.dashboard_api_url.rstrip("/"), "auth": settings.auth == "required"}

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")

    if gateway.keys is not None:
        app.add_middleware(RequireKey, ring=gateway.keys, rule=gateway_scope)
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
