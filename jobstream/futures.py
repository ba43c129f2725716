"""Two habits with asyncio futures, kept in one place."""

from __future__ import annotations

import asyncio
from typing import Any


def observe(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (a done-callback): its owner may have stopped
    waiting (a timeout), and asyncio would log "exception was never retrieved"."""
    if not fut.cancelled():
        fut.exception()


def describe(exc: BaseException | None) -> str:
    """`TypeName: message` (or the type alone when the message is empty), for logs and for
    the sentences errors are answered with."""
    if exc is None:
        return "unknown"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["describe", "observe"]
