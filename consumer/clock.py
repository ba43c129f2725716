"""The wall clock of the worker runtime, in milliseconds: the one definition in the package.

Wall time is what crosses processes (status event `at`, `js-due-ms`, `expires_at`); the
monotonic clock (aging, drains) is read where it is used, as `time.monotonic()`.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, as an int."""
    return time.time_ns() // 1_000_000
