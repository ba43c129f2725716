"""The gateway: the status-topic feed, WebSocket fan-out with subscriptions and resume,
the job-state projector, and the live dashboard.

`create_app(settings)` builds the FastAPI app that `jobstream gateway` serves; the
WebSocket protocol is described in `gateway.protocol`; the server must refuse client
messages over `MAX_MESSAGE_BYTES` (uvicorn's `ws_max_size`).
"""

from __future__ import annotations

from gateway.app import create_app
from gateway.protocol import MAX_MESSAGE_BYTES

__all__ = ["MAX_MESSAGE_BYTES", "create_app"]
