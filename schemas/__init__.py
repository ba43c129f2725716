"""The wire contract of jobstream: models, topic and header names, and the codec.

Nothing in this package does I/O.
"""

from __future__ import annotations

from schemas import events
from schemas.codec import (
    decode_cancel,
    decode_dead_letter,
    decode_job,
    decode_status_batch,
    encode_cancel,
    encode_dead_letter,
    encode_job,
    encode_status_batch,
    job_headers,
    parse_traceparent,
    partition_for,
    record_headers,
)
from schemas.dead_letter import AttemptError, DeadLetter, DeadReason, Source
from schemas.errors import DecodeError, SchemaError
from schemas.ids import child_job_id, new_job_id, now_ms, rfc3339
from schemas.job import (
    TYPE_PATTERN,
    Backoff,
    JobEnvelope,
    JobSpec,
    Priority,
)
from schemas.status import TERMINAL_STATES, JobError, JobState, Progress, StatusEvent, state_rank
from schemas.topics import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    HEADER_SCHEMA,
    HEADER_TRACEPARENT,
    HEADER_TYPE,
    SCHEMA_VERSION,
    Topics,
)

__all__ = [
    "HEADER_ATTEMPT",
    "HEADER_DUE",
    "HEADER_SCHEMA",
    "HEADER_TRACEPARENT",
    "HEADER_TYPE",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "TYPE_PATTERN",
    "AttemptError",
    "Backoff",
    "DeadLetter",
    "DeadReason",
    "DecodeError",
    "JobEnvelope",
    "JobError",
    "JobSpec",
    "JobState",
    "Priority",
    "Progress",
    "SchemaError",
    "Source",
    "StatusEvent",
    "Topics",
    "child_job_id",
    "decode_cancel",
    "decode_dead_letter",
    "decode_job",
    "decode_status_batch",
    "encode_cancel",
    "encode_dead_letter",
    "encode_job",
    "encode_status_batch",
    "events",
    "job_headers",
    "new_job_id",
    "now_ms",
    "parse_traceparent",
    "partition_for",
    "record_headers",
    "rfc3339",
    "state_rank",
]
