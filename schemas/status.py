"""Status events: every state change of a job, as published on the status topic."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobState(enum.StrEnum):
    scheduled = "scheduled"
    queued = "queued"
    active = "active"
    progress = "progress"
    completed = "completed"
    retrying = "retrying"
    failed = "failed"
    dead = "dead"
    cancelled = "cancelled"
    replayed = "replayed"


TERMINAL_STATES = frozenset({JobState.completed, JobState.dead, JobState.cancelled})

# Within one attempt, a later state never ranks below an earlier one. `failed` ranks below
# `retrying` and `dead`, which follow it for the same attempt.
_ORDER = {
    JobState.scheduled: 0,
    JobState.queued: 1,
    JobState.replayed: 1,
    JobState.active: 2,
    JobState.progress: 3,
    JobState.failed: 4,
    JobState.retrying: 5,
    JobState.completed: 6,
    JobState.dead: 6,
    JobState.cancelled: 7,
}


def state_rank(state: str, attempt: int) -> int:
    """A number that grows along a job's life; the projection never moves a job backwards."""
    try:
        order = _ORDER[JobState(state)]
    except ValueError:
        order = 0
    return attempt * 16 + order


class Progress(BaseModel):
    percent: float = Field(ge=0, le=100)
    message: str | None = None


class JobError(BaseModel):
    type: str
    message: str
    traceback: str | None = None


class StatusEvent(BaseModel):
    """One state change. `at` is milliseconds since the epoch."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    type: str
    state: JobState
    attempt: int = 1
    at: int
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    worker: str | None = None
    parent_id: str | None = None
    key: str | None = None
    schedule: str | None = Field(None, description="the recurring schedule this job is an occurrence of")
    occurrence_at: int | None = None
