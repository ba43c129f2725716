"""Opaque cursors: a version character, then base64url without padding of a payload.

Both cursors clients hold go through this codec: the gateway's resume cursor
(`gateway.cursor`, partition -> next offset as varints) and the dead-letter page cursor
(`deadletters.cursor`, `<dead_at>:<id>`). Each keeps only its payload's layout; the
envelope, its checks and the one `CursorError` live here. Only `A-Z a-z 0-9 - _` appear in
a cursor, so it is safe in URLs, query strings and JSON unescaped.

`CursorFormat.encode` and `CursorFormat.decode` are pure and inverse:
`decode(encode(b)) == b` for every payload `b`. `decode` accepts only the one spelling
`encode` writes (no padding, no non-canonical trailing bits), so a cursor names one payload.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = ["CursorError", "CursorFormat"]


class CursorError(ValueError):
    """A string is not a cursor this side wrote.

    `reason` says why, worded to follow the word "cursor" or a field name ("is truncated");
    `str(exc)` is the whole sentence ("cursor is truncated"). `code` is the stable
    machine-readable name an error frame carries.
    """

    code = "bad_cursor"

    def __init__(self, reason: str) -> None:
        super().__init__(f"cursor {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CursorFormat:
    """One kind of cursor: its version prefix, its size limit, and where a client finds it.

    `found_in` ends "must be a non-empty string taken from ..."; `resend` follows "has an
    unknown version; " and says what to send instead.
    """

    max_chars: int
    found_in: str
    resend: str
    version: str = "1"

    def encode(self, payload: bytes) -> str:
        """The cursor of `payload`."""
        return self.version + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")

    def decode(self, text: str) -> bytes:
        """The payload of a cursor `encode` wrote; raise `CursorError` saying why otherwise."""
        if not isinstance(text, str) or not text:
            raise CursorError(f"must be a non-empty string taken from {self.found_in}")
        if len(text) > self.max_chars:
            raise CursorError(f"is longer than {self.max_chars} characters")
        if text[0] != self.version:
            raise CursorError(f"has an unknown version; {self.resend}")
        body = text[1:]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise CursorError("is not valid base64url") from None
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
            raise CursorError("is not valid base64url")
        return raw
