"""Status events as they travel: one constructor per kind, so each event's fields are
written once.

An event is a plain dict (`Event`) on every hot path: orjson encodes it as it is, where a
model per event would cost microseconds per job. `schemas.status.StatusEvent` is its model,
for readers and the documented schema; every event built here validates against it (a
test says so). The fields every event has: `job_id`, `type`, `state`, `attempt`, `at` (ms
since the epoch); a follow-up's events carry `parent_id`.
"""

from __future__ import annotations

from typing import Any

from schemas.dead_letter import DeadReason
from schemas.ids import rfc3339
from schemas.job import JobEnvelope
from schemas.status import JobState

Event = dict[str, Any]


def status_event(
    job_id: str, job_type: str, state: JobState, at: int, attempt: int = 1, **fields: Any
) -> Event:
    """The one shape every event has, then `fields`."""
    return {"job_id": job_id, "type": job_type, "state": state.value, "attempt": attempt, "at": at, **fields}


def job_event(job: JobEnvelope, state: JobState, at: int, **fields: Any) -> Event:
    """An event about the attempt `job` is (its `parent_id` included when it has one): what
    a worker says of the job it runs (`active`, `progress`, `completed`, `failed`, ...)."""
    # built here, not through `status_event`: two events per job on the worker's hot path
    event = {
        "job_id": job.id,
        "type": job.type,
        "state": state.value,
        "attempt": job.attempt,
        "at": at,
        **fields,
    }
    if job.parent_id is not None:
        event["parent_id"] = job.parent_id
    if job.schedule is not None:
        event["schedule"], event["occurrence_at"] = job.schedule, job.occurrence_at
    return event


def queued(job: JobEnvelope, at: int, **fields: Any) -> Event:
    """`queued`: the job's record is about to go on its priority topic (a follow-up's too).
    With the job's `key` when it has one: the record's partition follows from it, and
    `GET /jobs/{id}/record` reads the record back from there."""
    if job.key is not None:
        fields["key"] = job.key
    return job_event(job, JobState.queued, at, priority=job.priority.value, **fields)


def scheduled(job: JobEnvelope, at: int) -> Event:
    """`scheduled`: a delayed job stored until `job.not_before`."""
    assert job.not_before is not None
    keyed = {} if job.key is None else {"key": job.key}
    return status_event(
        job.id, job.type, JobState.scheduled, at, job.attempt,
        priority=job.priority.value, due_at=job.not_before, run_at=rfc3339(job.not_before), **keyed,
    )  # fmt: skip


_CARRIED = ("key", "parent_id", "schedule", "occurrence_at")  # what `fired` copies from the envelope


def fired(job: dict[str, Any], at: int) -> Event:
    """`queued` for a delayed job, or a schedule's occurrence, that a scheduler fires (the
    envelope, still JSON), stamped with when its record goes on its topic: its due time, or
    `at` if later."""
    due = job.get("not_before")
    keyed = {name: job[name] for name in _CARRIED if job.get(name) is not None}
    return status_event(
        job["id"], job["type"], JobState.queued, max(at, due or 0), job.get("attempt", 1),
        priority=job.get("priority", "normal"), due_at=due, **keyed,
    )  # fmt: skip


def rejected(event: Event, message: str, at: int) -> Event:
    """`dead` with reason `rejected`: the job `event` announced was never taken (Kafka or
    Redis refused or did not acknowledge it); `message` says why."""
    return {**event, "state": JobState.dead.value, "reason": DeadReason.rejected.value, "at": at,
            "error": {"type": "Rejected", "message": message}}  # fmt: skip


def cancelled(job_id: str, job_type: str, at: int, reason: str) -> Event:
    """`cancelled` for a delayed job removed before it ran."""
    return status_event(job_id, job_type, JobState.cancelled, at, reason=reason)


__all__ = ["Event", "cancelled", "fired", "job_event", "queued", "rejected", "scheduled", "status_event"]
