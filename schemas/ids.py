"""Time-sortable job ids (UUIDv7, RFC 9562), and the clock they and the events read."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid

_HEX = "0123456789abcdef"


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: what `at`, `due_at` and the ids carry."""
    return time.time_ns() // 1_000_000


def rfc3339(ms: int) -> str:
    """`2030-01-01T09:30:00.000Z` for a time in ms since the epoch."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id(at_ms: int | None = None) -> str:
    """Return a new UUIDv7 as a 36-character string; ids sort by creation time (`at_ms`,
    now by default)."""
    ms = now_ms() if at_ms is None else at_ms
    rand = int.from_bytes(os.urandom(10), "big")
    # 48 bits time | 4 bits version | 12 bits rand_a | 2 bits variant | 62 bits rand_b
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def child_job_id(parent_id: str, index: int) -> str:
    """The id of a parent's `index`-th follow-up: the same every time, so a parent that runs
    again after a crash enqueues the same children, which the completed-id check absorbs."""
    return str(uuid.uuid5(_CHAIN_NAMESPACE, f"{parent_id}/{index}"))


_CHAIN_NAMESPACE = uuid.UUID("6f1c0e9a-3d5b-4c1e-9a7e-2b8f0c4d5e6f")
