"""JSON responses rendered with orjson.

FastAPI's own serialization walks the value through pydantic; the hot routes already hold
plain dicts, so they answer with orjson bytes directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


class JSONBytes(Response):
    """A JSON response whose content is encoded by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, status: int = 200, *, headers: Mapping[str, str] | None = None) -> Response:
    return JSONBytes(content, status_code=status, headers=headers)
