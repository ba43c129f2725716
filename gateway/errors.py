"""Errors of the gateway.

GatewayError
 ├── ProtocolError          a client message the gateway cannot act on; sent back as an
 │    │                     `{"error": ...}` frame, the connection stays open
 │    └── CursorError       a resume cursor that does not decode
 └── StatusTopicMissing     the status topic does not exist at startup
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


class CursorError(ProtocolError, ValueError):
    """A cursor string is not one this gateway wrote."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_cursor")


class StatusTopicMissing(GatewayError):
    """The status topic has no partitions on the broker (topics not created yet)."""
