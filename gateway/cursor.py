"""Resume cursors: the per-partition next offsets of the status topic, as one opaque string.

A cursor names the point in the status topic after the frame that carried it: for every
partition, the offset of the next record not yet delivered. Passing it back on a
`subscribe` resumes right there.

Format (private, may change with the version prefix): the envelope of `jobstream.cursor`
(the character `1`, then base64url without padding) around unsigned LEB128 varints: the
partition count, then for each partition in ascending order the gap to the previous
partition number and the next offset.

`encode_cursor` and `decode_cursor` are pure and inverse: `decode(encode(p)) == p` for
every mapping of non-negative ints.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobstream.cursor import CursorError, CursorFormat

MAX_CURSOR_CHARS = 8_192  # 1024 partitions with 64-bit offsets fit well inside this
FORMAT = CursorFormat(
    max_chars=MAX_CURSOR_CHARS,
    found_in="a frame's 'cursor'",
    resend="send a cursor this gateway sent you",
)


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
    return FORMAT.encode(bytes(out))


def decode_cursor(text: str) -> dict[int, int]:
    """Decode a cursor; raise `CursorError` saying why when it is not one `encode_cursor` wrote."""
    raw = FORMAT.decode(text)
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
        raise CursorError("has trailing bytes")
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
            raise CursorError("is truncated")
        if shift > 63:
            raise CursorError("holds a number larger than 64 bits")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
