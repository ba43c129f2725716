"""The job: what a client submits (`JobSpec`) and what travels on a job topic (`JobEnvelope`)."""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_DELAY_MS = 366 * 86_400_000
# RFC 3339 date-time, offset required (pydantic alone also takes numbers and naive times)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    if value is None or isinstance(value, dt.datetime) or (isinstance(value, str) and _RFC3339.match(value)):
        return value
    raise PydanticCustomError(
        "rfc3339", "must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T09:30:00Z"
    )


# A time a client gives: RFC 3339 with an offset, nothing else (not a number, not naive)
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
JobType = Annotated[str, StringConstraints(pattern=TYPE_PATTERN)]
JobKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Priority(enum.StrEnum):
    high = "high"
    normal = "normal"
    low = "low"

    @classmethod
    def ordered(cls) -> tuple[Priority, ...]:
        """Highest first."""
        return (cls.high, cls.normal, cls.low)

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for low."""
        return _RANKS[self]


_RANKS = {Priority.high: 0, Priority.normal: 1, Priority.low: 2}


class Backoff(BaseModel):
    """How long to wait before the next attempt of a failed job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["exponential", "fixed"] = "exponential"
    base_ms: int = Field(1_000, ge=0, le=86_400_000)
    max_ms: int = Field(3_600_000, ge=0, le=7 * 86_400_000)
    jitter: float = Field(0.2, ge=0.0, le=1.0)


class JobSpec(BaseModel):
    """A job as a client submits it (`POST /jobs`, a batch item, or a chained follow-up)."""

    model_config = ConfigDict(extra="forbid")

    type: JobType
    payload: dict[str, Any] = {}  # pydantic copies mutable defaults; a factory is slow in model_construct
    priority: Priority = Priority.normal
    key: JobKey | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout_s: float | None = Field(None, gt=0, le=86_400)
    backoff: Backoff | None = None
    delay_ms: int | None = Field(None, ge=0, le=MAX_DELAY_MS, description="run no earlier than this from now")
    run_at: Rfc3339 | None = Field(None, description="run no earlier than this (RFC 3339)")
    idempotency_key: str | None = Field(None, min_length=1, max_length=256)
    then: list[JobSpec] | None = Field(None, max_length=16, description="follow-ups run when this completes")
    ttl_ms: int | None = Field(None, gt=0, le=MAX_DELAY_MS, description="not run if not started by then")
    expires_at: AwareDatetime | None = Field(None, description="not run if not started by then (RFC 3339)")

    def expiry_ms(self, now_ms: int) -> int | None:
        """When the job, not yet started, is given up on (ms since the epoch), if ever."""
        if self.ttl_ms is not None:
            return now_ms + self.ttl_ms
        if self.expires_at is not None:
            return int(self.expires_at.timestamp() * 1000)
        return None

    def due_ms(self, now_ms: int) -> int | None:
        """When a delayed job falls due (ms since the epoch); None when it is due now."""
        if self.delay_ms:
            return now_ms + self.delay_ms
        if self.run_at is not None:
            due = int(self.run_at.timestamp() * 1000)
            return due if due > now_ms else None
        return None

    @model_validator(mode="after")
    def _exclusive(self) -> JobSpec:
        if self.delay_ms is not None and self.run_at is not None:
            raise ValueError("give delay_ms or run_at, not both")
        if self.ttl_ms is not None and self.expires_at is not None:
            raise ValueError("give ttl_ms or expires_at, not both")
        return self


class JobEnvelope(BaseModel):
    """A job on a job topic. Unknown fields are ignored, so newer producers can add some."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: JobType
    # Factories, not `{}` / `[]`: pydantic deep-copies a mutable default for every record
    # a worker decodes; a factory is a call to `dict`. Build envelopes without validation
    # with `trusted`, never `model_construct`: it inspects each factory's signature on
    # every call (0.4 ms an envelope).
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.normal
    attempt: int = Field(1, ge=1)
    max_attempts: int | None = Field(None, ge=1, description="unset: the handler's, then the worker's")
    backoff: Backoff | None = None
    timeout_s: float | None = None
    key: str | None = None
    idempotency_key: str | None = None
    created_at: int = 0
    not_before: int | None = None
    parent_id: str | None = None
    then: list[JobSpec] = Field(default_factory=list)
    replay_of: str | None = None
    expires_at: int | None = Field(None, description="ms since the epoch; not started by then: dead")
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="the errors of earlier attempts (schemas.AttemptError)"
    )
    traceparent: str | None = Field(
        None, description="W3C trace context the client sent; kept by retries and follow-ups"
    )
    schedule: str | None = Field(None, description="the recurring schedule whose occurrence this job is")
    occurrence_at: int | None = Field(None, description="the occurrence's time, ms since the epoch")

    @property
    def partition_key(self) -> str:
        """The record key: the job's key when it has one, else its id."""
        return self.key if self.key is not None else self.id

    @classmethod
    def trusted(cls, id: str, type: str, **fields: Any) -> JobEnvelope:
        """An envelope of values already valid (a validated spec's, the producer's own),
        not validated again: what `model_construct` makes, at a small part of its cost (it
        walks every field and inspects each default factory; the submit path makes one
        envelope per job).
        tests/test_codec.py holds the two equal, fields set and encoding included."""
        values = _ENVELOPE_TEMPLATE.copy()  # updating it keeps the fields' order: the encoding's
        values["id"], values["type"] = id, type
        values.update(fields)
        if len(values) != len(_ENVELOPE_TEMPLATE):
            unknown = sorted(set(values) - set(_ENVELOPE_TEMPLATE))
            raise TypeError(f"not fields of a job envelope: {unknown}")
        for name in _MUTABLE_DEFAULTS:  # each envelope its own
            if name not in fields:
                values[name] = values[name].copy()
        env = cls.__new__(cls)
        object.__setattr__(env, "__dict__", values)
        object.__setattr__(env, "__pydantic_fields_set__", {"id", "type", *fields})
        object.__setattr__(env, "__pydantic_extra__", None)
        object.__setattr__(env, "__pydantic_private__", None)
        return env


_ENVELOPE_TEMPLATE: dict[str, Any] = {
    name: None if field.is_required() else field.get_default(call_default_factory=True)
    for name, field in JobEnvelope.model_fields.items()
}
_MUTABLE_DEFAULTS = tuple(n for n, v in _ENVELOPE_TEMPLATE.items() if isinstance(v, dict | list))
