"""Which web pages may call the API and the gateway: the `cors_origins` allow-list. Pure.

A browser names the page behind a request in its `Origin` header (on every cross-site
request, on same-site ones that change state, and on every WebSocket handshake);
programs send none. A request is allowed when it has no `Origin`, when the origin's host
is the server's own (`Host`: the dashboard served by the gateway, the API's `/docs`; the
scheme is not compared, so a TLS proxy in front changes nothing), or when the origin is
in the list (`*` allows every origin). Anything else is refused by the caller: 403 on
HTTP (`producer.origin_guard`), a refused handshake on `/ws` (`gateway.app`).

Origins are compared as browsers send them, lowercased: `scheme://host[:port]`, the
default port left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AllowedOrigins", "check_origins"]

_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?/?$")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def check_origins(value: str) -> str:
    """`value` (comma-separated origins, or `*`) if every entry is an origin; else ValueError."""
    AllowedOrigins.parse(value)
    return value


@dataclass(frozen=True, slots=True)
class AllowedOrigins:
    origins: frozenset[str]
    any: bool = False

    @classmethod
    def parse(cls, value: str) -> AllowedOrigins:
        """From the setting: `https://app.example, http://localhost:3000`, or `*`, or empty."""
        entries = [e.strip().lower() for e in value.split(",") if e.strip()]
        if entries == ["*"]:
            return cls(frozenset(), any=True)
        origins = set()
        for entry in entries:
            m = _ORIGIN.match(entry)
            if m is None:
                raise ValueError(
                    f"cors_origins: {entry!r} is not an origin like https://app.example or "
                    "http://localhost:3000 (scheme, host and port only)"
                )
            scheme, host, port = m.groups()
            port = "" if port in (None, _DEFAULT_PORTS[scheme]) else port
            origins.add(f"{scheme}://{host}{port}")
        return cls(frozenset(origins))

    def __bool__(self) -> bool:
        return self.any or bool(self.origins)

    def listed(self) -> list[str]:
        """The origins for a CORS middleware: `["*"]` or the list."""
        return ["*"] if self.any else sorted(self.origins)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request with this `Origin` reaching a server addressed as `host` may go on."""
        if origin is None:
            return True
        origin = origin.strip().lower()
        if self.any or origin in self.origins:
            return True
        scheme, sep, rest = origin.partition("://")
        return bool(sep) and scheme in _DEFAULT_PORTS and host is not None and rest == host.strip().lower()
