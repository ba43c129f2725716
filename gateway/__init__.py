"""The gateway: the status-topic feed, WebSocket fan-out with subscriptions and resume,
the job-state projector, and the live dashboard.

`create_app(settings)` builds the FastAPI app that `jobstream gateway` serves; the
WebSocket protocol is described in `gateway.protocol`.
"""

from __future__ import annotations

from gateway.app import create_app

__all__ = ["create_app"]
