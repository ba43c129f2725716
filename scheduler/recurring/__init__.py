"""Recurring schedules: jobs fired once per occurrence of a cron expression or an interval,
however many schedulers run.

The definitions, the claim with its lease and each schedule's counts and runs are in Redis
(`store.py`); the times, catch-up and limit arithmetic is pure (`times.py`); the body of
`PUT /schedules/{name}` and what is kept of it in `spec.py`; and `claims.py` makes schedules
a source of jobs for the same loop that fires delayed jobs (`scheduler.loop.Scheduler`), so
occurrences go out exactly when due, `queued` event first. `schedule_loop` builds that loop;
the API runs one beside its delay scheduler, and so does `jobstream scheduler`. The HTTP
side is the API's (`producer.schedules`).
"""

from __future__ import annotations

from typing import Any

from jobstream.kafka import Partitioner
from jobstream.settings import DelaySettings
from jobstream.status_publisher import StatusPublisher
from scheduler.loop import Scheduler
from scheduler.recurring.claims import ScheduleClaims, occurrence
from scheduler.recurring.spec import NAME_PATTERN, Schedule, ScheduleSpec, occurrence_id
from scheduler.recurring.store import ScheduleState, ScheduleStore
from scheduler.recurring.times import Plan, Timing, plan


def schedule_loop(
    settings: DelaySettings, store: ScheduleStore, producer: Any, partitioner: Partitioner,
    publisher: StatusPublisher,
) -> Scheduler:  # fmt: skip
    """The loop that fires schedules' occurrences (a `Scheduler` over `ScheduleClaims`)."""
    claims = ScheduleClaims(store, settings.schedule_grace_ms)
    return Scheduler.from_settings(
        settings, claims, producer, partitioner, publisher, what="occurrences",
        lookahead_ms=settings.schedule_lookahead_ms,
    )  # fmt: skip


__all__ = [
    "NAME_PATTERN",
    "Plan",
    "Schedule",
    "ScheduleClaims",
    "ScheduleSpec",
    "ScheduleState",
    "ScheduleStore",
    "Timing",
    "occurrence",
    "occurrence_id",
    "plan",
    "schedule_loop",
]
