"""Keys on HTTP: `RequireKey`, the middleware that admits a request or answers 401/403.

A request names its key in `Authorization: Bearer <key>`. Which scope a path needs comes
from a rule per app (`api_scope`, `gateway_scope`); a path the rule leaves open (health,
readiness, metrics, the API's and the gateway's documents, the dashboard's files, CORS
preflights) passes without a key. An admitted request carries its `Principal` in the ASGI
scope (`principal_of`), where the routes check job types against the key's patterns.

Answers, JSON like every error:
- 401 with `WWW-Authenticate: Bearer`: no key, or one that is unknown, revoked or mistyped;
- 403: the key lacks the scope the request needs (the message names both);
- 503 naming Redis: the key is not in the settings and Redis cannot be asked.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from jobstream.access.keys import Principal
from jobstream.access.keys import Scope as KeyScope
from jobstream.access.ring import KeyRing, KeysUnavailable
from jobstream.http_errors import ApiError, Forbidden, Unavailable

PRINCIPAL = "jobstream.principal"
Rule = Callable[[str, str], KeyScope | None]  # (method, path) -> the scope needed; None: open

_OPEN = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})
_GATEWAY_OPEN = _OPEN | {"/", "/asyncapi.json"}  # the dashboard's page, the AsyncAPI document


class Unauthorized(ApiError):
    status = 401
    reason = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="jobstream"'})


def api_scope(method: str, path: str) -> KeyScope | None:
    """The API's rule: submits need `submit`, reads `read`, anything that changes `admin`."""
    if method == "OPTIONS" or path in _OPEN or path.startswith("/docs/"):
        return None
    if method == "POST" and path in ("/jobs", "/jobs/batch"):
        return "submit"
    if method in ("GET", "HEAD"):
        return "read"
    return "admin"  # DELETE /jobs/{id}, POST /dlq/replay


def gateway_scope(method: str, path: str) -> KeyScope | None:
    """The gateway's rule: its dashboard's files (the page asks for a key) and its AsyncAPI
    document are open; job lookups and WebSocket tokens need `read`."""
    if method == "OPTIONS" or path in _GATEWAY_OPEN or path.startswith("/dashboard/"):
        return None
    return "read"


def principal_of(scope: Scope) -> Principal | None:
    """The request's principal; None when keys are not required (everything is allowed)."""
    principal: Principal | None = scope.get(PRINCIPAL)
    return principal


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key in an `Authorization: Bearer` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


async def admit(ring: KeyRing, key: str | None, needed: KeyScope, scope: Scope) -> Principal:
    """The principal of `key` if it may make the request `scope` (needing `needed`); raises
    the error to answer."""
    if key is None:
        raise Unauthorized(
            f"{_what(scope)} needs an API key: send the header 'Authorization: Bearer <key>' "
            "(an operator makes one with `jobstream keys create`)"
        )
    try:
        principal = await ring.principal(key)
    except KeysUnavailable as exc:
        raise Unavailable("redis", f"the API key cannot be checked: {exc}; retry later") from exc
    if principal is None:
        raise Unauthorized("the API key is not valid: it is unknown, revoked or mistyped")
    if not principal.can(needed):
        raise Forbidden(
            f"{principal.describe()} lacks the scope '{needed}' that {_what(scope)} needs; "
            f"it has: {', '.join(sorted(principal.scopes))}",
            scope=needed,
        )
    return principal


def _what(scope: Scope) -> str:
    return f"{scope['method']} {scope['path']}"


def type_refused(principal: Principal, job_type: str, doing: str) -> Forbidden:
    """403 for a job type outside the key's patterns."""
    return Forbidden(
        f"{principal.describe()} may not {doing} jobs of type '{job_type}': "
        f"it is limited to the types {principal.types_text()}",
        type=job_type,
    )


class RequireKey:
    """Admit HTTP requests by key (see the module docstring); other scopes pass through."""

    def __init__(
        self, app: ASGIApp, ring: KeyRing, rule: Rule, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self._ring = ring
        self._rule = rule
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = self._rule(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        try:
            scope[PRINCIPAL] = await admit(self._ring, bearer(scope["headers"]), needed, scope)
        except ApiError as exc:
            if self._on_reject is not None:
                self._on_reject(exc.reason)
            await exc.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
