"""The wire contract of jobstream: models, topic and header names, and the codec.

Nothing in this package does I/O.
"""

from __future__ import annotations

from schemas.codec import (
    decode_job,
    decode_status_batch,
    encode_job,
    encode_status_batch,
    job_headers,
    status_partition,
)
from schemas.errors import DecodeError, SchemaError
from schemas.ids import new_job_id
from schemas.job import (
    TYPE_PATTERN,
    Backoff,
    JobEnvelope,
    JobSpec,
    Priority,
)
from schemas.status import TERMINAL_STATES, JobError, JobState, Progress, StatusEvent, state_rank
from schemas.topics import HEADER_ATTEMPT, HEADER_DUE, HEADER_SCHEMA, HEADER_TYPE, SCHEMA_VERSION, Topics

__all__ = [
    "HEADER_ATTEMPT",
    "HEADER_DUE",
    "HEADER_SCHEMA",
    "HEADER_TYPE",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "TYPE_PATTERN",
    "Backoff",
    "DecodeError",
    "JobEnvelope",
    "JobError",
    "JobSpec",
    "JobState",
    "Priority",
    "Progress",
    "SchemaError",
    "StatusEvent",
    "Topics",
    "decode_job",
    "decode_status_batch",
    "encode_job",
    "encode_status_batch",
    "job_headers",
    "new_job_id",
    "state_rank",
    "status_partition",
]
