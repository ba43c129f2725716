"""Schedules as a source of jobs for the scheduler loop (`scheduler.loop.Scheduler`).

The loop that fires delayed jobs fires schedules' occurrences too: `ScheduleClaims` has
the delay store's shape (`claim`, `done`, `redis`, `channel`). A claim takes the schedules
whose next occurrence falls within the loop's lookahead, decides for each what to fire
(`times.plan`: catch-up, limit, end) and returns one envelope per occurrence, due at the
occurrence (the loop's `BatchFirer` hands each record to Kafka at its time, never before,
with its `queued` event first). Once Kafka has every occurrence of a schedule (the loop
reports ids through `claim(forget=...)` or `done`), the schedule is released with its next
occurrence in the following claim's script call. A schedule with nothing to fire (every
occurrence missed, or it ended) is released at once.

Definitions are read once per version and kept, worked out (times, the job's template), so
a claim costs Redis four small values per schedule, not its definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from scheduler.recurring.spec import Schedule, occurrence_id
from scheduler.recurring.store import Claimed, Release, ScheduleStore
from scheduler.recurring.times import Timing, plan
from scheduler.store import ClaimedJobs
from schemas import now_ms

# occurrences one claim returns at most (a catch-up of many schedules waits for the next)
MAX_OCCURRENCES = 20_000
# A schedule taken back from a holder whose lease ran out was claimed in time: its
# occurrences up to a lease (and a lookahead) late are fired, whatever SCHEDULE_GRACE_MS says.
TAKEN_BACK_SLACK_MS = 1_000


@dataclass(frozen=True, slots=True)
class _Known:
    """A definition as read, with what every claim of it needs worked out once."""

    version: str
    schedule: Schedule
    timing: Timing
    template: dict[str, Any]


@dataclass(slots=True)
class _Held:
    """A schedule this process fired and has not released: the ids Kafka has yet to take."""

    release: Release
    waiting: set[str] = field(default_factory=set)


class ScheduleClaims:
    """See the module docstring. `grace_ms`: how late an occurrence may fire and still count
    as on time (`times.plan`)."""

    def __init__(self, store: ScheduleStore, grace_ms: int) -> None:
        self.redis = store.redis
        self.channel = store.channel
        self._store = store
        self._grace_ms = grace_ms
        self._held: dict[str, _Held] = {}  # by schedule name
        self._by_id: dict[str, _Held] = {}  # by occurrence job id
        self._unsent: list[Release] = []  # releases a failed call did not make
        self._known: dict[str, _Known] = {}  # definitions read, by schedule name

    async def claim(
        self,
        now_ms: int,
        lease_ms: int,
        limit: int,
        forget: Sequence[str] = (),
        horizon_ms: int | None = None,
    ) -> ClaimedJobs:
        horizon = now_ms if horizon_ms is None else horizon_ms
        releases, self._unsent = [*self._unsent, *self._taken(forget)], []
        try:
            claimed = await self._store.claim(now_ms, horizon, lease_ms, limit, releases)
        except BaseException:
            self._unsent = releases  # sent with the next call
            raise
        await self._learn(claimed.schedules)
        jobs: list[tuple[int, bytes]] = []
        nothing: list[Release] = []  # schedules with nothing to fire: released at once
        budget = MAX_OCCURRENCES
        for row in claimed.schedules:
            known = self._known.get(row.name)
            if known is None:  # deleted since the claim: nothing to fire, nothing to keep
                nothing.append(Release(row.name, row.lease, None))
                continue
            grace = self._grace_ms
            if row.taken_back:  # claimed in time by a holder that died: its occurrences are not missed
                grace = max(grace, lease_ms + (horizon - now_ms) + TAKEN_BACK_SLACK_MS)
            made = self._fire(known, row, now_ms, horizon, budget, grace) if budget > 0 else None
            if made is None:  # over budget: give it back unchanged, fired by the next claim
                nothing.append(Release(row.name, row.lease, row.next))
                continue
            release, occurrences = made
            budget -= len(occurrences)
            if not occurrences:
                nothing.append(release)
                continue
            held = _Held(release, {job_id for job_id, _, _ in occurrences})
            self._held[row.name] = held
            for job_id, at, raw in occurrences:
                self._by_id[job_id] = held
                jobs.append((at, raw))
        next_due = claimed.next_due
        if nothing:
            await self._release(nothing, now_ms)
            times = [r.next for r in nothing if r.next is not None]
            next_due = min([*times, *([next_due] if next_due is not None else [])], default=None)
        jobs.sort(key=lambda j: j[0])
        return ClaimedJobs([raw for _, raw in jobs], next_due, claimed.next_expiry)

    async def done(self, ids: Sequence[str]) -> None:
        """Release the schedules whose every occurrence Kafka now has (the loop's last word),
        with what an earlier call could not release."""
        releases, self._unsent = [*self._unsent, *self._taken(ids)], []
        await self._release(releases, now_ms())

    async def _release(self, releases: list[Release], now: int) -> None:
        """Release; on failure keep them to send with the next call (a claim or `done`)."""
        try:
            await self._store.release(releases, now)
        except BaseException:
            self._unsent.extend(releases)
            raise

    async def _learn(self, rows: Sequence[Claimed]) -> None:
        """Read the definitions of `rows` not known at their version, in one round trip."""
        stale = [r for r in rows if (k := self._known.get(r.name)) is None or k.version != r.version]
        if not stale:
            return
        for row, raw in zip(stale, await self._store.definitions([r.name for r in stale]), strict=True):
            if raw is None:
                self._known.pop(row.name, None)
                continue
            schedule = Schedule.decode(raw)
            self._known[row.name] = _Known(row.version, schedule, schedule.timing, schedule.template())

    def _fire(
        self, known: _Known, row: Claimed, now: int, horizon: int, budget: int, grace_ms: int
    ) -> tuple[Release, list[tuple[str, int, bytes]]] | None:
        """What to release and the occurrences to fire (job id, time, envelope); None when
        they would not fit in `budget`."""
        schedule, spec, template = known.schedule, known.schedule.spec, known.template
        remaining = None if spec.limit is None else spec.limit - row.fired
        decided = plan(
            known.timing, row.next, now, horizon, catch_up=spec.catch_up, catch_up_max=spec.catch_up_max,
            grace_ms=grace_ms, remaining=remaining,
        )  # fmt: skip
        if len(decided.fire) > budget:
            return None
        made = []
        runs = []
        for at in decided.fire:
            job_id = occurrence_id(schedule.name, at)
            made.append((job_id, at, occurrence(template, job_id, schedule.name, at, now, spec.ttl_ms)))
            runs.append(orjson.dumps({"occurrence_at": at, "job_id": job_id, "fired_at": max(at, now)}))
        release = Release(
            row.name, row.lease, decided.next, fired=len(made), missed=decided.missed,
            last=decided.fire[-1] if decided.fire else None, runs=runs,
        )  # fmt: skip
        return release, made

    def _taken(self, ids: Sequence[str]) -> list[Release]:
        """The releases of schedules whose last waiting occurrence is among `ids`."""
        out = []
        for job_id in ids:
            held = self._by_id.pop(job_id, None)
            if held is None:
                continue
            held.waiting.discard(job_id)
            name = held.release.name
            if not held.waiting and self._held.get(name) is held:
                del self._held[name]
                out.append(held.release)
        return out


def occurrence(
    template: dict[str, Any], job_id: str, name: str, at: int, now: int, ttl_ms: int | None
) -> bytes:
    """The envelope of one occurrence's job, as its record's value."""
    env = {
        **template,
        "id": job_id,
        "created_at": now,
        "not_before": at,
        "schedule": name,
        "occurrence_at": at,
    }
    if ttl_ms is not None:
        env["expires_at"] = at + ttl_ms
    return orjson.dumps(env)
