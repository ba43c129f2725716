"""How the HTTP processes (API, gateway) run under uvicorn, with the bounds uvicorn lacks.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a
client takes to send a request: its keep-alive timer is cancelled by any byte, so a client
sending its headers or body a byte at a time (slowloris) holds a connection, a file
descriptor and a parser forever; and `limit_concurrency` answers 503 only once a request's
headers are complete, which a slow client never reaches. `guarded_http(settings)` returns
uvicorn's httptools protocol with three bounds added, each O(1) per request (a time noted
when a request starts and when its headers are complete; one sweep per server checks
every open connection, ten times per shortest bound but at least once a second, so a
deadline is enforced within a second of passing, at no timer per request):

- headers: a request's headers must be complete `header_timeout_s` after the connection
  opened or, on a kept-alive connection, after the first byte following the previous
  request; however the bytes trickle, the deadline does not move. Past it the server
  answers 408 and closes (just closes if an earlier response is still being written);
- body: the rest of the request must arrive `body_timeout_s` after its headers; past it,
  408 and close if the app has not started its response (the app sees a disconnect),
  else close;
- connections: a connection accepted while `max_connections` are open (HTTP and
  WebSocket alike) is answered 503 and closed at once.

A WebSocket upgrade leaves these deadlines behind once its headers are complete: its
lifetime is the gateway's business (pings, the slow-client bound).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobstream.settings import ServerSettings

__all__ = ["guarded_http", "server_options"]

log = logging.getLogger("jobstream.http")


def _response(status: bytes, message: bytes) -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\n",
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(message)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            message,
        ]
    )


HEADERS_LATE = _response(b"408 Request Timeout", b"request headers not received in time")
BODY_LATE = _response(b"408 Request Timeout", b"request body not received in time")
TOO_MANY = _response(b"503 Service Unavailable", b"too many connections")


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a connection cap.

    The bounds are class attributes, set by `guarded_http` on a subclass of its own.
    """

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    max_connections: ClassVar[int] = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owed = _NOTHING  # what the client owes: nothing yet, headers or a body
        self._since = 0.0  # loop time since when it owes it

    # -- the deadlines: a sweep per server, not a timer per request -------------------------

    def _owe(self, what: int) -> None:
        self._owed = what
        self._since = self.loop.time()

    def _watch(self) -> None:
        """Make sure this server's sweep runs (it stops while no connection is open)."""
        state = self.server_state
        if not getattr(state, "jobstream_sweeping", False):
            state.jobstream_sweeping = True  # type: ignore[attr-defined]
            interval = min(1.0, max(0.02, min(self.header_timeout_s, self.body_timeout_s) / 10))
            self.loop.call_later(interval, _sweep, self.loop, state, interval)

    def _check(self, now: float) -> None:
        if self._owed == _HEADERS and now - self._since >= self.header_timeout_s:
            self._headers_late()
        elif self._owed == _BODY and now - self._since >= self.body_timeout_s:
            self._body_late()

    def _headers_late(self) -> None:
        self._owed = _NOTHING
        log.info("http headers not received in %gs, closing client=%s", self.header_timeout_s, self.client)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(HEADERS_LATE)
        self.transport.close()

    def _body_late(self) -> None:
        self._owed = _NOTHING
        log.info("http body not received in %gs, closing client=%s", self.body_timeout_s, self.client)
        cycle = self.cycle
        if not cycle.response_started:
            self.transport.write(BODY_LATE)
        cycle.disconnected = True  # the app's receive() says so; its late sends are dropped
        cycle.message_event.set()
        self.transport.close()

    # -- uvicorn's hooks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("http connection refused, %d open client=%s", self.max_connections, self.client)
            self._owed = _DONE
            transport.write(TOO_MANY)
            transport.close()
            return
        self._owe(_HEADERS)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owed = _DONE
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._owed == _NOTHING:  # the first byte of the next request starts its clock
            self._owe(_HEADERS)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self._owed = _DONE  # a WebSocket: the gateway bounds it from here
        else:
            self._owe(_BODY)

    def on_message_complete(self) -> None:
        self._owed = _NOTHING
        super().on_message_complete()


_NOTHING, _HEADERS, _BODY, _DONE = range(4)


def _sweep(loop: asyncio.AbstractEventLoop, state: Any, interval: float) -> None:
    """Close the server's connections past a deadline; again in `interval` while any is open."""
    now = loop.time()
    for conn in list(state.connections):
        if isinstance(conn, GuardedHttpTools):
            conn._check(now)
    if state.connections:
        loop.call_later(interval, _sweep, loop, state, interval)
    else:
        state.jobstream_sweeping = False


def guarded_http(settings: ServerSettings) -> type[GuardedHttpTools]:
    """A protocol class for uvicorn's `http=` with `settings`' bounds."""

    class Guarded(GuardedHttpTools):
        header_timeout_s = settings.header_timeout_s
        body_timeout_s = settings.body_timeout_s
        max_connections = settings.max_connections

    return Guarded


def server_options(settings: ServerSettings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`: host, port, the guarded
    protocol, and the same choices for every jobstream HTTP process."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "lifespan": "on",
        "http": guarded_http(settings),
        # no per-message deflate: compressing every frame for clients subscribed to
        # everything costs more CPU than the bandwidth it saves on a local network
        "ws_per_message_deflate": False,
    }
    return {**options, **overrides}
