"""Recurring schedules' times and what a claim fires (`scheduler.recurring.times`, `spec`):
pure, with fixed clocks, across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from scheduler.recurring import Schedule, ScheduleSpec, Timing, plan
from scheduler.recurring.claims import occurrence
from schemas import decode_job

BERLIN = ZoneInfo("Europe/Berlin")
S = 1_000


def berlin(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> int:
    return round(dt.datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold).timestamp() * 1000)


def local(t: int) -> str:
    return dt.datetime.fromtimestamp(t / 1000, BERLIN).isoformat()


def walk(timing: Timing, start: int, until: int) -> list[int]:
    """Every occurrence after `start` up to `until`, by `after` (as claims follow them)."""
    out: list[int] = []
    t = timing.after(start)
    while t is not None and t <= until:
        out.append(t)
        t = timing.after(t)
    return out


DAILY_0230 = Timing("30 2 * * *", "Europe/Berlin", None, 0)


def test_a_time_the_spring_change_skips_fires_once_at_the_first_minute_after() -> None:
    """Berlin, 2026-03-29: clocks jump from 02:00 to 03:00. A daily 02:30 fires once that day,
    at 03:00; the days around it at 02:30 (forwards and backwards alike)."""
    fired = walk(DAILY_0230, berlin(2026, 3, 27, 12, 0), berlin(2026, 3, 31, 12, 0))
    assert [local(t) for t in fired] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert DAILY_0230.newest(berlin(2026, 3, 31, 12, 0), berlin(2026, 3, 27, 12, 0), 10) == fired[::-1]


def test_a_time_the_autumn_change_repeats_fires_once() -> None:
    """Berlin, 2026-10-25: 02:00-03:00 happens twice. A daily 02:30 fires once, the first time."""
    fired = walk(DAILY_0230, berlin(2026, 10, 24, 12, 0), berlin(2026, 10, 26, 12, 0))
    assert [local(t) for t in fired] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    assert berlin(2026, 10, 25, 2, 30, fold=1) not in fired  # the second 02:30 (+01:00)


def test_hourly_cron_across_the_autumn_change_fires_each_real_hour_once() -> None:
    """`0 * * * *` fires every hour of elapsed time through the repeated hour, none twice."""
    hourly = Timing("0 * * * *", "Europe/Berlin", None, 0)
    fired = walk(hourly, berlin(2026, 10, 25, 0, 30), berlin(2026, 10, 25, 4, 30))
    assert len(fired) == len(set(fired))
    assert all(b - a == 3_600_000 for a, b in itertools.pairwise(fired))


def test_a_claim_after_downtime_across_the_change_fires_per_catch_up() -> None:
    """Schedulers down from Mar 27 to Apr 1 (fixed clock): `all` fires each day once (the
    skipped 02:30 at 03:00), `last` the newest only, `none` nothing, and each counts the rest."""
    due = DAILY_0230.after(berlin(2026, 3, 27, 12, 0))
    assert due is not None
    now = berlin(2026, 4, 1, 12, 0)
    kw: dict[str, Any] = {"catch_up_max": 100, "grace_ms": 10 * S, "remaining": None}
    every = plan(DAILY_0230, due, now, now + 50, catch_up="all", **kw)
    assert [local(t)[:16] for t in every.fire] == [
        "2026-03-28T02:30", "2026-03-29T03:00", "2026-03-30T02:30", "2026-03-31T02:30", "2026-04-01T02:30",
    ]  # fmt: skip
    assert every.missed == 0 and every.next == berlin(2026, 4, 2, 2, 30)
    last = plan(DAILY_0230, due, now, now + 50, catch_up="last", **kw)
    assert (last.fire, last.missed, last.next) == ([berlin(2026, 4, 1, 2, 30)], 4, every.next)
    none = plan(DAILY_0230, due, now, now + 50, catch_up="none", **kw)
    assert (none.fire, none.missed, none.next) == ([], 5, every.next)


EVERY_S = Timing(None, "UTC", 1_000, 100_000)


@pytest.mark.parametrize(
    ("catch_up", "fired_from", "missed"),
    [("none", 190_000, 80), ("last", 189_000, 79), ("all", 185_000, 75)],
)
def test_catch_up_modes_after_downtime(catch_up: Any, fired_from: int, missed: int) -> None:
    """Due since 110 s, claimed at 200 s with 10 s grace: the occurrences from 190 s are on
    time in every mode; of the 80 older ones `last` adds the newest, `all` up to
    `catch_up_max` (5), and the rest count as missed."""
    p = plan(
        EVERY_S, 110_000, 200_000, 200_050, catch_up=catch_up, catch_up_max=5, grace_ms=10_000, remaining=None
    )
    assert p.fire == list(range(fired_from, 200_001, 1_000))
    assert (p.missed, p.next) == (missed, 201_000)


def test_an_on_time_claim_fires_what_falls_within_the_lookahead() -> None:
    p = plan(EVERY_S, 200_000, 199_980, 200_030, catch_up="none", catch_up_max=1, grace_ms=0, remaining=None)
    assert (p.fire, p.missed, p.next) == ([200_000], 0, 201_000)
    early = plan(
        EVERY_S, 200_000, 199_900, 199_950, catch_up="none", catch_up_max=1, grace_ms=0, remaining=None
    )
    assert (early.fire, early.next) == ([], 200_000)  # nothing due yet: look again then


def test_limit_and_end_at_end_a_schedule() -> None:
    p = plan(EVERY_S, 110_000, 114_000, 114_000, catch_up="all", catch_up_max=9, grace_ms=0, remaining=3)
    assert (p.fire, p.next) == ([110_000, 111_000, 112_000], None)
    ending = Timing(None, "UTC", 1_000, 100_000, end_at=112_500)
    p = plan(ending, 110_000, 114_000, 114_000, catch_up="all", catch_up_max=9, grace_ms=0, remaining=None)
    assert (p.fire, p.next) == ([110_000, 111_000, 112_000], None)


def test_intervals_fall_from_their_anchor_and_start_at() -> None:
    starting = Timing(None, "UTC", 5_000, 42_000, start_at=42_000)
    assert (starting.after(0), starting.after(42_000), starting.after(50_000)) == (42_000, 47_000, 52_000)
    assert starting.newest(60_000, 0, 3) == [57_000, 52_000, 47_000]
    assert starting.count(60_000, 43_000) == 3


def test_cron_with_seconds() -> None:
    every_10s = Timing("*/10 * * * * *", "UTC", None, 0)
    assert walk(every_10s, 1_000, 35_000) == [10_000, 20_000, 30_000]


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"type": "report.build", **fields})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "tz"),
        ({"every_ms": 999}, "every_ms"),
        ({"every_ms": 1000, "catch_up": "some"}, "catch_up"),
        ({"every_ms": 1000, "delay_ms": 5}, "delay_ms"),
    ],
)
def test_bad_fields_name_themselves(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    assert [e["loc"][0] for e in caught.value.errors()] == [field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "cron"),
        ({"cron": "0 3 * * *", "every_ms": 60_000}, "cron"),
        ({"every_ms": 60_000, "tz": "Europe/Berlin"}, "tz"),
        ({"every_ms": 60_000, "end_at": "2020-01-01T00:00:00Z"}, "end_at"),
        (
            {"every_ms": 60_000, "start_at": "2031-01-02T00:00:00Z", "end_at": "2031-01-01T00:00:00Z"},
            "end_at",
        ),
    ],
)
def test_problems_across_fields_name_the_field(fields: dict[str, Any], field: str) -> None:
    now = round(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    assert [f for f, _ in spec(**fields).problems(now)] == [field]


def test_an_occurrence_is_a_job_carrying_its_schedule() -> None:
    """The envelope every scheduler builds for an occurrence: a valid job, its id from the
    name and the time, due at the occurrence, with the template's fields."""
    nightly = spec(cron="0 3 * * *", payload={"n": 1}, priority="high", ttl_ms=60_000)
    s = Schedule(name="nightly", spec=nightly, created_at=1, updated_at=1)
    job = decode_job(occurrence(s.template(), "sched:nightly:7000", "nightly", 7_000, 6_990, 60_000))
    assert (job.id, job.type, job.payload, job.priority) == (
        "sched:nightly:7000",
        "report.build",
        {"n": 1},
        "high",
    )
    assert (job.schedule, job.occurrence_at, job.not_before, job.expires_at) == (
        "nightly",
        7_000,
        7_000,
        67_000,
    )
    assert Schedule.decode(s.encode()) == s
