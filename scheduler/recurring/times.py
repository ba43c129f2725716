"""When a schedule's occurrences fall, and which of them one claim fires. Pure: times are
ms since the epoch; no I/O, no clock of its own.

- **Cron** expressions (5 fields, or 6 with seconds first) are read by `cronsim`, in the
  schedule's time zone, with Debian cron's rules across daylight-saving changes: a time
  that does not exist that day (02:30 when clocks jump from 02:00 to 03:00) fires once, at
  the first minute that exists after it; a time that happens twice (clocks going back)
  fires once, the first time.
- **Intervals** (`every_ms`) fall at `anchor + k * every_ms`: the anchor is `start_at`, or
  when the schedule was first made, so occurrences do not drift with restarts or updates.

`start_at` and `end_at` bound both. `plan` decides what a claim fires:

- occurrences at most `grace_ms` late count as on time and fire in every mode;
- older ones were missed (nothing ran at their time): `none` skips them, `last` fires the
  newest of them, `all` fires up to `catch_up_max` of them, the newest;
- `limit` caps how many a schedule fires in all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim

CatchUp = Literal["none", "last", "all"]

# at most this many late occurrences are counted as missed after one outage (a 1 s cron
# schedule down for a day would otherwise take a second to count)
MAX_COUNTED = 10_000
# at most this many on-time occurrences in one claim (a 1 s schedule with a long grace)
MAX_ON_TIME = 1_000


@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's times: `cron` (in `tz`) or `every_ms` (from `anchor`), within
    `start_at`..`end_at`."""

    cron: str | None
    tz: str
    every_ms: int | None
    anchor: int
    start_at: int | None = None
    end_at: int | None = None

    def after(self, t: int) -> int | None:
        """The first occurrence later than `t`; None when there is none before `end_at`."""
        if self.start_at is not None and t < self.start_at:
            t = self.start_at - 1
        if self.every_ms is not None:
            k = 0 if t < self.anchor else (t - self.anchor) // self.every_ms + 1
            found: int | None = self.anchor + k * self.every_ms
        else:
            found = _ms(next(CronSim(self._cron, _at(t, self._zone))))
        return found if found is not None and (self.end_at is None or found <= self.end_at) else None

    def newest(self, upto: int, since: int, n: int) -> list[int]:
        """Up to `n` occurrences in `since..upto` (both included), the newest first."""
        since = max(since, self.start_at or since)
        if self.end_at is not None:
            upto = min(upto, self.end_at)
        if upto < since or n <= 0:
            return []
        if self.every_ms is not None:
            if upto < self.anchor:
                return []
            top = (upto - self.anchor) // self.every_ms
            out = []
            for k in range(top, max(-1, top - n), -1):
                t = self.anchor + k * self.every_ms
                if t < since:
                    break
                out.append(t)
            return out
        # upto + 1 ms: cronsim steps back first from a whole second, and includes it otherwise
        times = CronSim(self._cron, _at(upto + 1, self._zone), reverse=True)
        out = []
        for when in times:
            t = _ms(when)
            if t < since or len(out) >= n:
                break
            out.append(t)
        return out

    def count(self, upto: int, since: int) -> int:
        """How many occurrences fall in `since..upto` (at most `MAX_COUNTED` for cron)."""
        if self.every_ms is not None:
            lo, hi = max(since, self.start_at or since, self.anchor), upto
            if self.end_at is not None:
                hi = min(hi, self.end_at)
            if hi < lo:
                return 0
            first = self.anchor + -(-(lo - self.anchor) // self.every_ms) * self.every_ms
            return 0 if first > hi else (hi - first) // self.every_ms + 1
        return len(self.newest(upto, since, MAX_COUNTED))

    @property
    def _cron(self) -> str:
        assert self.cron is not None
        return self.cron

    @property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one claim does with a schedule: fire these occurrences (oldest first), count
    `missed` ones skipped, and look again at `next` (None: the schedule has ended)."""

    fire: list[int]
    missed: int
    next: int | None


def plan(
    timing: Timing,
    due: int,
    now: int,
    horizon: int,
    *,
    catch_up: CatchUp,
    catch_up_max: int,
    grace_ms: int,
    remaining: int | None,
) -> Plan:
    """`due` is the schedule's first occurrence not fired yet; `horizon` (>= now) how far
    ahead this claim fires (each record goes out at its time); `remaining` how many it may
    still fire in all (its `limit` less those fired), None for no limit."""
    on_time_from = max(due, now - grace_ms)
    on_time = timing.newest(horizon, on_time_from, MAX_ON_TIME)
    late_upto = on_time_from - 1
    late: list[int] = []
    missed = 0
    if due <= late_upto:
        if catch_up != "none":
            late = timing.newest(late_upto, due, catch_up_max if catch_up == "all" else 1)
        missed = max(0, timing.count(late_upto, due) - len(late))
    fire = sorted(late + on_time)
    if remaining is not None and len(fire) >= remaining:
        return Plan(fire[: max(0, remaining)], missed, None)
    return Plan(fire, missed, timing.after(max(horizon, fire[-1] if fire else horizon)))


def _at(t: int, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t / 1000, zone)


def _ms(when: dt.datetime) -> int:
    return round(when.timestamp() * 1000)
