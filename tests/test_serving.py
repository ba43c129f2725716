"""The HTTP bounds of `jobstream.serving` (header and body deadlines, the connection cap),
with real sockets against uvicorn: in-process with a small app, and the `jobstream api`
and `jobstream gateway` commands as processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway import MAX_MESSAGE_BYTES
from jobstream.cli import procs
from jobstream.serving import server_options
from jobstream.settings import ServerSettings, Settings
from tests.conftest import MS

S = 1000 * MS  # one second, scaled like every timeout of the suite
DEADLINE_S = 0.3  # the bounds under test: short, so the tests are quick


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: reads the whole body and answers its length. WebSocket: echoes text."""
    if scope["type"] == "http":
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})


class Served:
    def __init__(self, server: uvicorn.Server, port: int) -> None:
        self.server, self.port = server, port

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def serving(**bounds: Any) -> AsyncIterator[Served]:
    """`echo_app` under uvicorn with `server_options` (what `jobstream api` runs), in this loop."""
    settings = ServerSettings(port=procs.free_port(), **bounds)
    config = uvicorn.Config(echo_app, **server_options(settings, log_level="warning", lifespan="off"))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30 * S):
            while not server.started:
                assert not task.done(), "uvicorn exited during startup"
                await asyncio.sleep(0.01)
        yield Served(server, settings.port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30 * S)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), 10 * S)


async def test_half_a_header_line_gets_408_and_close_at_the_deadline() -> None:
    """A connection that sends half a request line and stalls is answered 408 and closed,
    not before the header deadline."""
    async with serving(header_timeout_s=DEADLINE_S) as served:
        reader, writer = await served.open()
        started = time.monotonic()
        writer.write(b"GET / HT")
        answer = await until_closed(reader)
        assert time.monotonic() - started >= DEADLINE_S * 0.9
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b"request headers not received in time")
        writer.close()


async def test_trickled_headers_do_not_move_the_deadline() -> None:
    """Header bytes that keep coming, one at a time, do not extend the header deadline."""
    async with serving(header_timeout_s=DEADLINE_S) as served:
        reader, writer = await served.open()

        async def trickle() -> None:
            writer.write(b"GET / HTTP/1.1\r\nx-slow: ")
            while True:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(DEADLINE_S / 10)  # pacing the client, not waiting for the server

        sender = asyncio.create_task(trickle())
        try:
            assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            writer.close()


async def test_idle_connection_that_never_sends_is_closed() -> None:
    """A connection that sends nothing at all is closed at the header deadline."""
    async with serving(header_timeout_s=DEADLINE_S) as served:
        reader, writer = await served.open()
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        writer.close()


async def test_second_request_on_a_kept_alive_connection_has_the_deadline_too() -> None:
    """After a complete request and response, a slow next request on the same connection is
    bound by the header deadline as well."""
    async with serving(header_timeout_s=DEADLINE_S) as served:
        reader, writer = await served.open()
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * S)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(1), 10 * S) == b"3"
        writer.write(b"GET / HT")
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        writer.close()


async def test_slow_body_gets_408_and_close() -> None:
    """A request whose body does not all arrive within the body deadline is answered 408
    and closed; the app's read ends."""
    async with serving(header_timeout_s=10 * S, body_timeout_s=DEADLINE_S) as served:
        reader, writer = await served.open()
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        answer = await until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b"request body not received in time")
        writer.close()
        tasks = served.server.server_state.tasks
        await asyncio.wait_for(asyncio.gather(*tasks), 10 * S)  # the app's task has ended


async def test_connections_over_the_cap_are_refused_with_503() -> None:
    """With max_connections open, another connection is answered 503 and closed at once;
    once one closes, a new connection is served."""
    async with serving(max_connections=3) as served:
        held = []
        for _ in range(3):
            reader, writer = await served.open()
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * S)).startswith(b"HTTP/1.1 200")
            held.append(writer)
        reader, writer = await served.open()
        answer = await until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"too many connections")
        writer.close()
        held.pop().close()
        connections = served.server.server_state.connections
        deadline = time.monotonic() + 10 * S
        while len(connections) > 2:  # the server has seen the close
            assert time.monotonic() < deadline, "the server never saw a connection close"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{served.port}/")).status_code == 200
        for w in held:
            w.close()


async def test_websocket_outlives_the_header_deadline() -> None:
    """A WebSocket connection is not closed by the header or body deadline once upgraded."""
    async with (
        serving(header_timeout_s=DEADLINE_S, body_timeout_s=DEADLINE_S) as served,
        connect(f"ws://127.0.0.1:{served.port}/") as ws,
    ):
        reader, writer = await served.open()  # a slow client, to see the deadline pass
        writer.write(b"GET / HT")
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        writer.close()
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 10 * S) == "still here"


@pytest.mark.parametrize("command", ["api", "gateway"])
async def test_commands_apply_the_bounds(
    command: str, env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """`jobstream api` and `jobstream gateway` serve with the bounds: a stalled header is
    answered 408 at JOBSTREAM_HEADER_TIMEOUT_S; the gateway closes an oversize message (1009)."""
    port = procs.free_port()
    log = tmp_path / f"{command}.log"
    bounds = {"JOBSTREAM_HEADER_TIMEOUT_S": str(DEADLINE_S)}
    argv = [sys.executable, "-m", "jobstream.cli", command, "--port", str(port)]
    proc = procs.spawn(argv, env={**env, **bounds}, log=log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited with {proc.returncode}:\n{procs.tail(log)}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        procs.wait_until(ready, timeout_s=60 * S, what=f"{command} to be ready")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HT")
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        writer.close()
        if command == "gateway":
            async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
                await ws.send("x" * (MAX_MESSAGE_BYTES + 1))
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10 * S)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        procs.stop(proc, grace_s=30)
