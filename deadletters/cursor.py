"""Cursors of `GET /dlq`: where the next page starts, as one opaque string.

Pages run newest first, ordered by `(dead_at, id)` descending. A cursor names the last
item of a page (its `Position`); the next page holds the items strictly after it in
that order. Positions, unlike offsets, survive records being added or trimmed meanwhile.

Format (private, may change with the version prefix): the character `1`, then base64url
without padding of the UTF-8 text `<dead_at>:<id>`. Only `A-Z a-z 0-9 - _` appear, so a
cursor is safe in URLs unescaped.

`encode_cursor` and `decode_cursor` are pure and inverse: `decode(encode(p)) == p` for
every position with a non-negative `dead_at` and a non-empty id of at most 256 characters.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

VERSION = "1"
MAX_ID_CHARS = 256
MAX_CURSOR_CHARS = 512


class CursorError(ValueError):
    """A string is not a cursor `encode_cursor` wrote; the message says why."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the dead-letter index: a record's `dead_at` and id."""

    dead_at: int
    id: str


def encode_cursor(pos: Position) -> str:
    """Encode a position. Raises ValueError for a negative time or an empty or long id."""
    if pos.dead_at < 0 or not pos.id or len(pos.id) > MAX_ID_CHARS:
        raise ValueError(f"not a cursor position: {pos!r}")
    raw = f"{pos.dead_at}:{pos.id}".encode()
    return VERSION + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Position:
    """Decode a cursor; raise `CursorError` saying why when it is not one this API wrote."""
    if not text:
        raise CursorError("must be a non-empty string taken from a page's 'next_cursor'")
    if len(text) > MAX_CURSOR_CHARS:
        raise CursorError(f"is longer than {MAX_CURSOR_CHARS} characters")
    if text[0] != VERSION:
        raise CursorError("has an unknown version; pass a 'next_cursor' this API returned")
    body = text[1:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("is not valid base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        raise CursorError("is not valid base64url")
    try:
        head, sep, job_id = raw.decode().partition(":")
    except UnicodeDecodeError:
        raise CursorError("is not a cursor this API wrote") from None
    if not sep or not head.isascii() or not head.isdigit() or not job_id or len(job_id) > MAX_ID_CHARS:
        raise CursorError("is not a cursor this API wrote")
    return Position(int(head), job_id)
