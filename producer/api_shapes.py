"""The shapes of what the API answers (and of the batch body), for the OpenAPI document.

Documentation only: the routes answer plain dicts through orjson (`jobstream.http_responses`);
`producer.openapi` puts these in the document, and tests/test_openapi.py holds every
answer the API gives to them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from schemas import JobSpec

Absent = SkipJsonSchema[None]  # a key the answer may leave out (never null)


class FieldProblem(BaseModel):
    field: str = Field(description="where, e.g. `payload.n` or `then.0.type`")
    message: str


class ErrorBody(BaseModel):
    """Every error answer. `detail` says what is wrong in a sentence."""

    detail: str
    errors: list[FieldProblem] | Absent = Field(None, description="422, and 413 when a field is to blame")
    limit: int | Absent = Field(None, description="413: the limit exceeded")
    service: Literal["kafka", "redis"] | Absent = Field(None, description="503: what is down")
    state: str | Absent = Field(None, description="409 on cancel: the state the job ended in")


class Accepted(BaseModel):
    id: str
    state: str = Field(description="`queued`, `scheduled`; for a repeat, the first job's current state")
    run_at: str | Absent = Field(None, description="when `scheduled`: RFC 3339")
    duplicate: bool | Absent = Field(None, description="true on a repeat (200)")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSpec] = Field(min_length=1, description="at most `max_batch` (default 10,000)")


class ItemProblem(BaseModel):
    status: int = Field(description="what the item would have got alone: 409, 413, 422 or 503")
    message: str
    errors: list[FieldProblem] | Absent = None


class BatchRow(BaseModel):
    index: int
    id: str | Absent = None
    state: str | Absent = None
    run_at: str | Absent = None
    duplicate: bool | Absent = None
    error: ItemProblem | Absent = None


class BatchResults(BaseModel):
    results: list[BatchRow] = Field(description="one row per item, in order")


class JobState(BaseModel):
    id: str
    type: str
    state: str
    attempt: int
    progress: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None
    parent_id: str | None
    children: list[str]
    reason: str | None
    priority: str | None
    key: str | None
    schedule: str | None = Field(description="the recurring schedule this job is an occurrence of")
    occurrence_at: int | None
    created_at: int
    queued_at: int | None = Field(description="when its record went on its priority topic")
    updated_at: int


class JobRecord(BaseModel):
    id: str
    source: Literal["kafka", "delayed"] = Field(description="its topic, or Redis while a delayed job waits")
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None = Field(description="the record's time (ms since the epoch)")
    job: dict[str, Any] = Field(description="the job's envelope as submitted: payload, options, follow-ups")


class Cancel(BaseModel):
    id: str
    state: Literal["cancelled", "cancelling"]


class Queue(BaseModel):
    kind: Literal["priority", "retry"]
    name: str
    topic: str
    partitions: int
    depth: int
    end_offset: int


# The counts in `/queues` (class names are the document's schema names: a docstring would
# show up in it too). Not `producer.delayed.DelayedJobs` nor `deadletters.DeadLetters`.
class Delayed(BaseModel):
    waiting: int
    claimed: int


class DeadLetters(BaseModel):
    indexed: int
    on_topic: int


class Queues(BaseModel):
    at: int
    group: str
    queues: list[Queue]
    delayed: Delayed
    dead_letters: DeadLetters


class DelayedJob(BaseModel):
    id: str
    type: str
    priority: str
    due_at: int
    run_at: str
    attempt: int


class NextDelayed(BaseModel):
    waiting: int
    claimed: int
    items: list[DelayedJob]


class TimelineEvent(BaseModel):
    model_config = ConfigDict(extra="allow")  # worker, error, reason, progress, ... when given

    state: str
    attempt: int
    at: int


class JobEvents(BaseModel):
    id: str
    events: list[TimelineEvent]


class Live(BaseModel):
    ok: bool


class Ready(BaseModel):
    kafka: str = Field(description="`ok`, or why not")
    redis: str
    detail: str | Absent = Field(None, description="503: what is unavailable")


class Source(BaseModel):
    topic: str
    partition: int
    offset: int


class LastError(BaseModel):
    type: str
    message: str


class DeadHead(BaseModel):
    """What every view of a dead letter starts with."""

    id: str
    type: str | None
    reason: str
    dead_at: int
    attempts: int
    source: Source


class DeadSummary(DeadHead):
    last_error: LastError | None
    replayed_by: str | None


class DeadPage(BaseModel):
    items: list[DeadSummary]
    next_cursor: str | None


class DeadDetail(DeadHead):
    job: dict[str, Any] | None
    raw: str | None = Field(description="a poison record's bytes, base64")
    errors: list[dict[str, Any]]
    replayed_by: str | None
    replayed_as: str | None


class DryRun(BaseModel):
    matched: int
    sample: list[DeadSummary]


class ReplayStarted(BaseModel):
    replay_id: str
    matched: int


class Skipped(BaseModel):
    already_replayed: int
    no_job: int
    expired: int


class ReplayStatus(BaseModel):
    replay_id: str
    state: str = Field(description="running, done or failed")
    matched: int
    replayed: int
    skipped: int
    skipped_by_reason: Skipped
    failed: int
    error: str | None
    started_at: int | None
    finished_at: int | None
    filter: dict[str, Any]
    options: dict[str, Any]


class ScheduleItem(BaseModel):
    name: str
    state: Literal["active", "paused", "ended"]
    cron: str | None
    tz: str | None
    every_ms: int | None
    type: str
    priority: str
    catch_up: Literal["none", "last", "all"]
    limit: int | None
    next_run_at: int | None
    next_runs: list[str] = Field(description="the next few run times, RFC 3339")
    fired: int
    missed: int
    last_run_at: int | None
    paused_at: int | None
    created_at: int
    updated_at: int


class SchedulePage(BaseModel):
    items: list[ScheduleItem]
    next_cursor: str | None = Field(description="pass as `after` for the next page")


class ScheduleRun(BaseModel):
    occurrence_at: int
    job_id: str
    fired_at: int
    manual: bool | Absent = None
    state: str | None = Field(description="the job's state now; null once forgotten")


class ScheduleDetail(ScheduleItem):
    spec: dict[str, Any] = Field(description="the schedule as given")
    runs: list[ScheduleRun] = Field(description="the newest 20 occurrences fired, oldest first")


class ScheduleDeleted(BaseModel):
    name: str
    deleted: Literal[True]


class ScheduleFired(BaseModel):
    name: str
    job_id: str
    occurrence_at: int
