"""Errors of the gateway.

GatewayError
 ├── ProtocolError          a client message the gateway cannot act on; sent back as an
 │                          `{"error": ...}` frame, the connection stays open
 └── StatusTopicMissing     the status topic does not exist at startup

A resume cursor that does not decode raises the runtime's `jobstream.cursor.CursorError`
(a ValueError, code `bad_cursor`), answered like a `ProtocolError`.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error raised by `gateway`."""


class ProtocolError(GatewayError):
    """A client message is malformed; `str(exc)` says what is wrong and what to send instead.

    `code`, when set, is a stable machine-readable name sent along in the error frame.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class StatusTopicMissing(GatewayError):
    """The status topic has no partitions on the broker (topics not created yet)."""
