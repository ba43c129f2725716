"""A recurring schedule as a client writes it (`ScheduleSpec`, the body of
`PUT /schedules/{name}`) and as Redis keeps it (`Schedule`).

A schedule says when (`cron` in `tz`, or `every_ms`; `start_at`, `end_at`, `limit`), what
to do with occurrences missed while no scheduler ran (`catch_up`, `scheduler.recurring.times`)
and the job each occurrence becomes: `type`, `payload`, `priority` and the options a job
takes (`key`, `max_attempts`, `timeout_s`, `backoff`, `ttl_ms`, `then`). The schedule says
when the job runs, so `delay_ms`, `run_at`, `expires_at` and `idempotency_key` are not
among them. Each check names its field (a 422 from the API).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim
from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.recurring.times import CatchUp, Timing
from schemas import Backoff, JobSpec, Priority
from schemas.job import MAX_DELAY_MS, JobKey, JobType, Rfc3339

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
MIN_EVERY_MS = 1_000


class ScheduleSpec(BaseModel):
    """`PUT /schedules/{name}`'s body."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        None, description="5 fields (minute hour day month weekday), or 6 with seconds first", max_length=200
    )
    tz: str = Field("UTC", description="the time zone `cron` is read in (IANA name, e.g. Europe/Berlin)")
    every_ms: int | None = Field(None, ge=MIN_EVERY_MS, le=MAX_DELAY_MS, description="or: an interval")
    type: JobType
    payload: dict[str, Any] = {}
    priority: Priority = Priority.normal
    key: JobKey | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout_s: float | None = Field(None, gt=0, le=86_400)
    backoff: Backoff | None = None
    ttl_ms: int | None = Field(
        None, gt=0, le=MAX_DELAY_MS, description="an occurrence not started by then is not run"
    )
    then: list[JobSpec] | None = Field(None, max_length=16)
    start_at: Rfc3339 | None = Field(None, description="no occurrence before this")
    end_at: Rfc3339 | None = Field(None, description="no occurrence after this")
    limit: int | None = Field(None, ge=1, description="fire this many occurrences, then end")
    catch_up: CatchUp = Field(
        "none", description="occurrences missed while no scheduler ran: none, last or all"
    )
    catch_up_max: int = Field(100, ge=1, le=1_000, description="with catch_up=all: at most this many")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, dt.datetime.now(dt.UTC))
            except Exception as exc:  # the library's error, or any other it raises on odd input
                raise ValueError(f"is not a cron expression we can read ({exc})") from None
        return value

    @field_validator("tz")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a known time zone (an IANA name like Europe/Berlin)"
            ) from None
        return value

    def problems(self, now: int) -> list[tuple[str, str]]:
        """What is wrong across fields, as (field, message); empty when the spec can be kept."""
        out = []
        if (self.cron is None) == (self.every_ms is None):
            out.append(("cron", "give cron or every_ms (one of them)"))
        if self.every_ms is not None and self.tz != "UTC":
            out.append(("tz", "applies to cron only; every_ms counts milliseconds"))
        start, end = _ms(self.start_at), _ms(self.end_at)
        if end is not None and end <= now:
            out.append(("end_at", "is in the past: the schedule would never fire"))
        elif start is not None and end is not None and end <= start:
            out.append(("end_at", "must be after start_at"))
        return out


class Schedule(BaseModel):
    """What Redis keeps of a schedule: its spec, and when it was made (the interval's anchor)."""

    name: str
    spec: ScheduleSpec
    created_at: int
    updated_at: int

    @property
    def timing(self) -> Timing:
        s = self.spec
        start = _ms(s.start_at)
        return Timing(
            s.cron, s.tz, s.every_ms, start if start is not None else self.created_at, start, _ms(s.end_at)
        )

    def template(self) -> dict[str, Any]:
        """The envelope fields every occurrence's job shares (as JSON values)."""
        s = self.spec
        fields = s.model_dump(
            mode="json",
            include={"type", "payload", "priority", "key", "max_attempts", "timeout_s", "backoff", "then"},
        )
        return {k: v for k, v in fields.items() if v is not None}

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def decode(cls, raw: bytes | str) -> Self:
        return cls.model_validate_json(raw)


def occurrence_id(name: str, at: int) -> str:
    """The job id of a schedule's occurrence: the same for every scheduler that fires it."""
    return f"sched:{name}:{at}"


def _ms(when: dt.datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)
