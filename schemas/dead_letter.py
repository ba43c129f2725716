"""Dead letters: what a job looked like when it was given up on, and why.

A dead-letter record carries the last envelope (or, for a record that did not decode,
its raw bytes in base64), the reason, every attempt's error, and where the record came
from. It is keyed like the job (its partition key), so it can be replayed in order.
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

from schemas.job import JobEnvelope


class DeadReason(enum.StrEnum):
    exhausted = "exhausted"  # every attempt failed
    non_retryable = "non_retryable"  # the handler said so, or raised a configured class
    poison = "poison"  # the record did not decode
    timeout = "timeout"  # the last attempt ran past timeout_s
    expired = "expired"  # not started before its expiry
    unknown_type = "unknown_type"  # no worker has a handler for the type
    rejected = "rejected"  # Kafka refused the job's record (a delayed job too large to fire)


class AttemptError(BaseModel):
    """One failed attempt."""

    attempt: int
    type: str
    message: str
    traceback: str | None = None
    worker: str | None = None
    at: int


class Source(BaseModel):
    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """A record on the dead-letter topic."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="the job id, or poison:<topic>:<partition>:<offset>")
    type: str | None = None
    reason: DeadReason
    job: JobEnvelope | None = None
    raw: str | None = Field(None, description="base64 of the record's bytes, for poison")
    errors: list[AttemptError] = Field(default_factory=list)
    source: Source
    dead_at: int
