"""The client's HTTP retries (`jobstream.client.transport`) against a small local server: pure
of Kafka and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jobstream.client.errors import InvalidInput, Unavailable
from jobstream.client.transport import Transport


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, list[str]]]:
    """A server answering 503 (Retry-After 0) to the first two requests of each path, then
    200; 422 on /bad. Yields its URL and every request it saw."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        if request.path.endswith("/bad"):
            return web.json_response(
                {"detail": "no", "errors": [{"field": "x", "message": "no"}]}, status=422
            )
        if seen.count(f"{request.method} {request.path}") <= 2:
            return web.json_response(
                {"detail": "down", "service": "kafka"}, status=503, headers={"Retry-After": "0"}
            )
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), seen


async def test_only_calls_safe_to_repeat_are_sent_again(flaky: tuple[str, list[str]]) -> None:
    """A GET (and a POST its caller calls safe) goes through two 503s; a plain POST is sent
    once and raises; a 4xx raises at once, naming the field; the URL's path prefix is kept."""
    url, seen = flaky
    http = Transport(url + "/prefix", {}, timeout=5, retry_for=10, max_connections=4)
    try:
        assert await http.exchange("GET", "/jobs/a", None, None) == (200, {"ok": True})
        assert await http.exchange("POST", "/jobs", {"k": 1}, None, retry=True) == (200, {"ok": True})
        with pytest.raises(Unavailable) as down:
            await http.exchange("POST", "/schedules/s/run", None, None)
        assert down.value.service == "kafka"
        with pytest.raises(InvalidInput) as bad:
            await http.exchange("GET", "/bad", None, None)
        assert bad.value.field == "x"
    finally:
        await http.aclose()
    assert seen.count("GET /prefix/jobs/a") == 3 and seen.count("POST /prefix/jobs") == 3
    assert seen.count("POST /prefix/schedules/s/run") == 1 and seen.count("GET /bad") == 0
    assert seen.count("GET /prefix/bad") == 1


async def test_the_deadline_ends_the_retries(flaky: tuple[str, list[str]]) -> None:
    url, seen = flaky
    http = Transport(url, {}, timeout=5, retry_for=10, max_connections=4)
    try:
        with pytest.raises(Unavailable):
            await http.exchange("GET", "/slow", None, deadline=0.0)
    finally:
        await http.aclose()
    assert seen == ["GET /slow"]
