"""One `/ws` connection: read client messages, keep the subscription, run the client.

Three tasks per connection: the ASGI handler (this module's `serve`), a reader for client
messages, and the client's sender. The handler returns when the peer leaves or the client
is closed by the gateway (too slow, sending too fast, shutdown), whichever comes first.

With API keys required (`jobstream.access`), a connection is accepted and then admitted by
its key (header) or one-time token (`?token=`), or closed with 4401 / 4403; a key limited
to some job types gets events, snapshots and replays of those types only.

A client may send `client_message_burst` messages at once, then `client_messages_per_s`;
one that sends faster is closed with 1008 `too many messages: ...` (`jobstream.throttle`
says why it is closed, not slowed down). A message is at most `MAX_MESSAGE_BYTES`
(`gateway.protocol`), which the server enforces (1009) before the reader sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from gateway.client import Client
from gateway.cursor import decode_cursor
from gateway.errors import ProtocolError
from gateway.hub import SHUTDOWN_CODE, SHUTDOWN_REASON
from gateway.protocol import (
    Selection,
    Subscribe,
    error_frame,
    parse_message,
    snapshot_frame,
    subscribed_frame,
)
from gateway.resume import resume
from jobstream.access.http import bearer
from jobstream.access.keys import Principal
from jobstream.access.ring import KeyRing, KeysUnavailable
from jobstream.cursor import CursorError
from jobstream.throttle import Throttle
from schemas import state_rank

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger("jobstream.gateway.ws")


async def serve(ws: WebSocket, gw: Gateway) -> None:
    """Run one connection until it ends; never raises for a peer's behaviour."""
    await ws.accept()
    hub = gw.hub
    if hub.closing:
        await ws.close(SHUTDOWN_CODE, SHUTDOWN_REASON)
        return
    principal = None
    if gw.keys is not None:
        admitted = await _admit(ws, gw.keys)
        if isinstance(admitted, tuple):
            log.info("ws refused code=%d reason=%s", *admitted)
            await ws.close(*admitted)
            return
        principal = admitted
    async with Client(ws) as client:
        if principal is not None and principal.limited:
            client.sees = principal.allows
        hub.add(client)
        log.debug("ws open client=%s clients=%d", client.id, len(hub))
        reader = asyncio.create_task(_read(ws, client, gw), name=f"ws-reader-{client.id}")
        closed = asyncio.create_task(client.wait_closed(), name=f"ws-closed-{client.id}")
        try:
            await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hub.remove(client)
            reader.cancel()
            closed.cancel()
            await asyncio.gather(reader, closed, return_exceptions=True)
            if not reader.cancelled() and reader.exception() is not None:
                log.error("ws reader failed client=%s", client.id, exc_info=reader.exception())
    log.debug("ws closed client=%s code=%s", client.id, client.close_code)


async def _admit(ws: WebSocket, keys: KeyRing) -> Principal | tuple[int, str]:
    """The connection's principal, from `?token=` (`POST /ws-token`, for browsers) or the
    `Authorization: Bearer` header; else the close code and reason (at most 123 bytes):
    4401 no key or a bad one, 4403 a key without `read`, 1013 Redis cannot say."""
    token = ws.query_params.get("token")
    try:
        if token is not None:
            principal = await keys.redeem_token(token)
            if principal is None:
                return 4401, "token unknown, used or expired: get a new one from POST /ws-token"
        else:
            key = bearer(ws.scope["headers"])
            if key is None:
                return (
                    4401,
                    "API key needed: header Authorization: Bearer <key>, or ?token= from POST /ws-token",
                )
            found = await keys.principal(key)
            if found is None:
                return 4401, "the API key is not valid: unknown, revoked or mistyped"
            principal = found
    except KeysUnavailable:
        return 1013, "the API key cannot be checked now (Redis); try again later"
    if not principal.can("read"):
        return 4403, f"key {principal.key_id} lacks the scope 'read' the feed needs"
    return principal


async def _read(ws: WebSocket, client: Client, gw: Gateway) -> None:
    rate, burst = gw.settings.client_messages_per_s, gw.settings.client_message_burst
    throttle = Throttle(rate, burst, time.monotonic())
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if not throttle.take(time.monotonic()):
            log.warning("ws client sends too fast, closing client=%s", client.id)
            gw.hub.drop(client, f"too many messages: more than {rate:g} per second (burst {burst})")
            return
        try:
            parsed = parse_message(message.get("text"))
            if parsed.subscribe is not None:
                await _subscribe(client, gw, parsed.subscribe)
            elif parsed.unsubscribe is not None:
                gw.hub.subscriptions.unsubscribe(client, parsed.unsubscribe)
                _acknowledge(client, gw)
        except (ProtocolError, CursorError) as exc:
            gw.hub.send(client, error_frame(str(exc), exc.code))


async def _subscribe(client: Client, gw: Gateway, sel: Subscribe) -> None:
    hub = gw.hub
    cursor = decode_cursor(sel.cursor) if sel.cursor is not None else None
    new_jobs = list(dict.fromkeys(j for j in sel.jobs if j not in client.jobs))
    hub.subscriptions.check_capacity(client, len(new_jobs))
    snapshot = None
    snapshot_failed = False
    if new_jobs:
        try:
            snapshot = await gw.snapshot(new_jobs)
            if client.sees is not None:  # jobs of types its key may not see: as if unknown
                snapshot = [state for state in snapshot if client.sees(state.get("type") or "")]
        except (RedisError, OSError) as exc:
            log.warning("ws snapshot failed client=%s: %r", client.id, exc)
            snapshot_failed = True
    # No awaits from here on: the subscription, its replay and the live feed stay gap-free.
    if client.closing:
        return
    hub.subscribe(client, Selection.model_construct(jobs=new_jobs, types=sel.types, all=sel.all))
    client.paused = cursor is not None  # live frames wait until the replay is done
    # a resuming client has seen up to its own cursor; the replay frames carry it on from there
    _acknowledge(client, gw, sel.cursor)
    if snapshot is not None:
        hub.send(client, snapshot_frame(snapshot))
    elif snapshot_failed:
        hub.send(
            client,
            error_frame(
                "job states are unavailable right now (Redis); events follow live, "
                "or try GET /jobs/{id} later",
                code="snapshot_unavailable",
            ),
        )
    if cursor is not None:
        await resume(hub, client, cursor, gw.backfill)
    elif new_jobs:
        ranks = {s["id"]: state_rank(s["state"], s["attempt"]) for s in snapshot or ()}
        hub.recent(client, new_jobs, ranks)


def _acknowledge(client: Client, gw: Gateway, cursor: str | None = None) -> None:
    at = cursor if cursor is not None else gw.hub.cursor
    gw.hub.send(client, subscribed_frame(len(client.jobs), client.types, client.all, at))
