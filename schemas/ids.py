"""Time-sortable job ids (UUIDv7, RFC 9562), and the clock they and the events read."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid


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
    r = _random10()
    # 48 bits time | 4 bits version | 12 bits rand_a | 2 bits variant | 62 bits rand_b
    rest = bytes((0x70 | (r[0] & 0x0F), r[1], 0x80 | (r[2] & 0x3F)))
    h = ((ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + rest + r[3:]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Entropy:
    """`os.urandom` drawn 4 KiB at a time: a system call per id cost more than the rest of
    making one. Emptied in a forked child, so parent and child never share random bytes."""

    pool = b""
    at = 0
    lock = threading.Lock()


def _random10() -> bytes:
    with _Entropy.lock:  # two threads never take the same bytes
        at = _Entropy.at
        if at + 10 > len(_Entropy.pool):
            _Entropy.pool, at = os.urandom(4000), 0
        _Entropy.at = at + 10
        return _Entropy.pool[at : at + 10]


def _forget_entropy() -> None:
    _Entropy.pool, _Entropy.at, _Entropy.lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_entropy)


def child_job_id(parent_id: str, index: int) -> str:
    """The id of a parent's `index`-th follow-up: the same every time, so a parent that runs
    again after a crash enqueues the same children, which the completed-id check absorbs."""
    return str(uuid.uuid5(_CHAIN_NAMESPACE, f"{parent_id}/{index}"))


_CHAIN_NAMESPACE = uuid.UUID("6f1c0e9a-3d5b-4c1e-9a7e-2b8f0c4d5e6f")
