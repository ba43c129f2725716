"""JSON responses rendered with orjson.

FastAPI's own serialization walks the value through pydantic; the hot routes already hold
plain dicts, so they answer with orjson bytes directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Message, Send


class JSONBytes(Response):
    """A JSON response whose content is encoded by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, status: int = 200, *, headers: Mapping[str, str] | None = None) -> Response:
    return JSONBytes(content, status_code=status, headers=headers)


class TrackedSend:
    """Wraps an ASGI `send`; `started` tells whether the response has begun, after which
    no error response can replace it."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
