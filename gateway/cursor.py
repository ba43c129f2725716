"""Resume cursors: the per-partition next offsets of the status topic, as one opaque string.

A cursor names the point in the status topic after the frame that carried it: for every
partition, the offset of the next record not yet delivered. Passing it back on a
`subscribe` resumes right there.

Format (private, may change with the version prefix): the character `1`, then base64url
without padding of unsigned LEB128 varints: the partition count, then for each partition
in ascending order the gap to the previous partition number and the next offset. Only
`A-Z a-z 0-9 - _` appear, so a cursor is safe in URLs, query strings and JSON unescaped.

`encode_cursor` and `decode_cursor` are pure and inverse: `decode(encode(p)) == p` for
every mapping of non-negative ints.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from gateway.errors import CursorError

VERSION = "1"
MAX_CURSOR_CHARS = 8_192  # 1024 partitions with 64-bit offsets fit well inside this


def encode_cursor(positions: Mapping[int, int]) -> str:
    """Encode partition -> next offset. Raises ValueError on a negative number."""
    out = bytearray()
    _put(out, len(positions))
    prev = -1
    for partition in sorted(positions):
        offset = positions[partition]
        if partition < 0 or offset < 0:
            raise ValueError(f"negative partition or offset: {partition}:{offset}")
        _put(out, partition - prev - 1)
        _put(out, offset)
        prev = partition
    return VERSION + base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> dict[int, int]:
    """Decode a cursor; raise `CursorError` saying why when it is not one `encode_cursor` wrote."""
    if not isinstance(text, str) or not text:
        raise CursorError("cursor must be a non-empty string taken from a frame's 'cursor'")
    if len(text) > MAX_CURSOR_CHARS:
        raise CursorError(f"cursor is longer than {MAX_CURSOR_CHARS} characters")
    if text[0] != VERSION:
        raise CursorError("cursor has an unknown version; send a cursor this gateway sent you")
    body = text[1:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("cursor is not valid base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        raise CursorError("cursor is not valid base64url")
    pos = 0
    count, pos = _get(raw, pos)
    positions: dict[int, int] = {}
    partition = -1
    for _ in range(count):
        gap, pos = _get(raw, pos)
        offset, pos = _get(raw, pos)
        partition += gap + 1
        positions[partition] = offset
    if pos != len(raw):
        raise CursorError("cursor has trailing bytes")
    return positions


def _put(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(raw):
            raise CursorError("cursor is truncated")
        if shift > 63:
            raise CursorError("cursor holds a number larger than 64 bits")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
