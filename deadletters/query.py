"""Selecting dead letters: the filter, its inputs, and the shapes the API answers with.

Pure: no I/O. `DlqFilter.matches` is the one definition of "selected", used alike by
`GET /dlq`, the dry run and the replay itself, so a dry run counts what a replay takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from jobstream.http_errors import FieldError, InvalidInput
from schemas import DeadLetter, DeadReason, Priority
from schemas.job import JobType

MAX_IDS = 10_000
MAX_Q_CHARS = 200

DeadId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
TimeBound = int | str | None
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_MAX_MS_DIGITS = len(str(_MAX_MS)) + 1


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """What to select. Empty collections and None select everything on that axis."""

    types: frozenset[str] = frozenset()
    reasons: frozenset[DeadReason] = frozenset()
    ids: frozenset[str] = frozenset()
    since: int | None = None  # ms, inclusive
    until: int | None = None  # ms, inclusive
    q: str | None = None  # lowercased
    patterns: tuple[str, ...] = ()  # a limited API key's job-type patterns (`jobstream.access`)

    def matches(self, dead: DeadLetter) -> bool:
        if self.types and (dead.type or "") not in self.types:
            return False
        if self.patterns and not any(fnmatchcase(dead.type or "", p) for p in self.patterns):
            return False
        if self.reasons and dead.reason not in self.reasons:
            return False
        if self.ids and dead.id not in self.ids:
            return False
        if self.since is not None and dead.dead_at < self.since:
            return False
        if self.until is not None and dead.dead_at > self.until:
            return False
        if self.q is not None:
            q = self.q
            return any(q in e.type.lower() or q in e.message.lower() for e in dead.errors)
        return True

    def describe(self) -> dict[str, Any]:
        """The filter as JSON, for a replay's record."""
        out: dict[str, Any] = {
            "types": sorted(self.types),
            "reasons": sorted(r.value for r in self.reasons),
            "ids": sorted(self.ids),
            "since": self.since,
            "until": self.until,
            "q": self.q,
            "patterns": list(self.patterns),
        }
        return {k: v for k, v in out.items() if v}


def parse_time(value: int | str | None, field: str) -> int | None:
    """Milliseconds since the epoch, from ms (int or digits) or RFC 3339 with a zone.

    Raises `InvalidInput` naming `field`.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _invalid(field, "must be milliseconds since the epoch or an RFC 3339 time")
    if isinstance(value, int):
        ms = value
    elif value.isascii() and value.isdigit():
        # 16 digits are past year 9999 already; int() of a few thousand digits raises
        ms = int(value) if len(value) <= _MAX_MS_DIGITS else _MAX_MS + 1
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise _invalid(
                field, "must be milliseconds since the epoch or an RFC 3339 time like 2026-01-31T12:00:00Z"
            ) from None
        if when.tzinfo is None:
            raise _invalid(field, "must include a time zone (e.g. 'Z' or '+01:00')")
        ms = int(when.timestamp() * 1000)
    if ms < 0 or ms > _MAX_MS:
        raise _invalid(field, "is out of range")
    return ms


def build_filter(
    *,
    types: list[str] | None = None,
    reasons: list[DeadReason] | None = None,
    ids: list[str] | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    q: str | None = None,
) -> DlqFilter:
    """A filter from validated parts; raises `InvalidInput` for bad or inverted times."""
    lo, hi = parse_time(since, "since"), parse_time(until, "until")
    if lo is not None and hi is not None and lo > hi:
        raise _invalid("until", "must not be before 'since'")
    return DlqFilter(
        types=frozenset(types or ()),
        reasons=frozenset(reasons or ()),
        ids=frozenset(ids or ()),
        since=lo,
        until=hi,
        q=q.lower() if q else None,
    )


class ReplayRequest(BaseModel):
    """The body of `POST /dlq/replay`."""

    model_config = ConfigDict(extra="forbid")

    types: list[JobType] = Field(default_factory=list, max_length=100)
    reasons: list[DeadReason] = Field(default_factory=list)
    ids: list[DeadId] = Field(default_factory=list, max_length=MAX_IDS)
    since: int | str | None = None
    until: int | str | None = None
    q: str | None = Field(None, min_length=1, max_length=MAX_Q_CHARS)
    dry_run: bool = True
    priority: Priority | None = None
    rate: float | None = Field(None, gt=0, le=1_000_000, description="jobs per second")
    force: bool = False

    def to_filter(self) -> DlqFilter:
        return build_filter(
            types=self.types,
            reasons=self.reasons,
            ids=self.ids,
            since=self.since,
            until=self.until,
            q=self.q,
        )


def attempts_of(dead: DeadLetter) -> int:
    if dead.errors:
        return max(len(dead.errors), max(e.attempt for e in dead.errors))
    return dead.job.attempt if dead.job is not None else 0


def _head(dead: DeadLetter) -> dict[str, Any]:
    """What every view of a dead letter starts with."""
    return {
        "id": dead.id,
        "type": dead.type,
        "reason": dead.reason.value,
        "dead_at": dead.dead_at,
        "attempts": attempts_of(dead),
        "source": dead.source.model_dump(),
    }


def summary(dead: DeadLetter, replayed_by: str | None) -> dict[str, Any]:
    """One row of `GET /dlq` and of a dry run's sample."""
    last = dead.errors[-1] if dead.errors else None
    return {
        **_head(dead),
        "last_error": {"type": last.type, "message": last.message} if last is not None else None,
        "replayed_by": replayed_by,
    }


def detail(dead: DeadLetter, replayed_by: str | None, replayed_as: str | None) -> dict[str, Any]:
    """`GET /dlq/{id}`: the whole record and whether (and as what) it was replayed."""
    return {
        **_head(dead),
        "job": dead.job.model_dump(mode="json") if dead.job is not None else None,
        "raw": dead.raw,
        "errors": [e.model_dump() for e in dead.errors],
        "replayed_by": replayed_by,
        "replayed_as": replayed_as,
    }


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"invalid filter: field '{field}' {message}", [FieldError(field, message)])
