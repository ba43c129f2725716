"""Cursors of `GET /dlq`: where the next page starts, as one opaque string.

Pages run newest first, ordered by `(dead_at, id)` descending. A cursor names the last
item of a page (its `Position`); the next page holds the items strictly after it in
that order. Positions, unlike offsets, survive records being added or trimmed meanwhile.

Format (private, may change with the version prefix): the envelope of `jobstream.cursor`
(the character `1`, then base64url without padding) around the UTF-8 text `<dead_at>:<id>`.

`encode_cursor` and `decode_cursor` are pure and inverse: `decode(encode(p)) == p` for
every position with a non-negative `dead_at` and a non-empty id of at most 256 characters.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobstream.cursor import CursorError, CursorFormat

MAX_ID_CHARS = 256
MAX_CURSOR_CHARS = 512
FORMAT = CursorFormat(
    max_chars=MAX_CURSOR_CHARS,
    found_in="a page's 'next_cursor'",
    resend="pass a 'next_cursor' this API returned",
)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the dead-letter index: a record's `dead_at` and id."""

    dead_at: int
    id: str


def encode_cursor(pos: Position) -> str:
    """Encode a position. Raises ValueError for a negative time or an empty or long id."""
    if pos.dead_at < 0 or not pos.id or len(pos.id) > MAX_ID_CHARS:
        raise ValueError(f"not a cursor position: {pos!r}")
    return FORMAT.encode(f"{pos.dead_at}:{pos.id}".encode())


def decode_cursor(text: str) -> Position:
    """Decode a cursor; raise `CursorError` saying why when it is not one this API wrote."""
    raw = FORMAT.decode(text)
    try:
        head, sep, job_id = raw.decode().partition(":")
    except UnicodeDecodeError:
        raise CursorError("is not a cursor this API wrote") from None
    if not sep or not head.isascii() or not head.isdigit() or not job_id or len(job_id) > MAX_ID_CHARS:
        raise CursorError("is not a cursor this API wrote")
    return Position(int(head), job_id)
