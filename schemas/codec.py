"""Bytes on the wire.

Job records carry one `JobEnvelope` as JSON. Status records carry a JSON array of status
events, all for jobs that map to the record's partition (`partition_for(job_id, n)`): producers
coalesce the events of one flush into one record per partition, and a job's events keep
their order because they always land on the same partition.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.dead_letter import DeadLetter
from schemas.errors import DecodeError
from schemas.job import JobEnvelope
from schemas.topics import HEADER_ATTEMPT, HEADER_SCHEMA, HEADER_TRACEPARENT, HEADER_TYPE, SCHEMA_VERSION

Headers = list[tuple[str, bytes]]


def encode_job(job: JobEnvelope) -> bytes:
    return job.model_dump_json(exclude_defaults=True).encode()


def decode_job(raw: bytes | None) -> JobEnvelope:
    """Decode a job record's value; raise `DecodeError` saying why it is poison."""
    if raw is None:
        raise DecodeError("record has no value")
    try:
        return JobEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(f"not a job envelope: {_first_error(exc)}") from None


def job_headers(job: JobEnvelope) -> Headers:
    return record_headers(job.type, job.attempt, job.traceparent)


def record_headers(job_type: str, attempt: int, traceparent: str | None) -> Headers:
    """The headers of a job-topic record (`job_headers` for one held as a decoded dict)."""
    headers = [
        (HEADER_SCHEMA, SCHEMA_VERSION),
        (HEADER_TYPE, job_type.encode()),
        (HEADER_ATTEMPT, str(attempt).encode()),
    ]
    if traceparent is not None:
        headers.append((HEADER_TRACEPARENT, traceparent.encode()))
    return headers


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def parse_traceparent(value: str | None) -> str | None:
    """A W3C `traceparent` header value, or None when absent or invalid: the Trace Context
    spec has a receiver ignore a value it cannot parse (and so start a new trace)."""
    if value is None:
        return None
    value = value.strip().lower()
    if not _TRACEPARENT.match(value) or value.startswith("ff") or set(value[3:35]) == {"0"}:
        return None
    if set(value[36:52]) == {"0"}:
        return None
    return value


def partition_for(key: str, partitions: int) -> int:
    """The partition of a record with this key: a job-topic record (job, retry, dead letter)
    by its partition key, a status event by its job id. Stable across processes and restarts.

    Every producer uses this instead of the client's partitioner, so a key maps to the
    same partition number on every job topic, and Python's murmur2 is not paid per record.
    """
    return zlib.crc32(key.encode()) % partitions


def encode_dead_letter(dead: DeadLetter) -> bytes:
    return dead.model_dump_json(exclude_none=True).encode()


def decode_dead_letter(raw: bytes | None) -> DeadLetter:
    if raw is None:
        raise DecodeError("record has no value")
    try:
        return DeadLetter.model_validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(f"not a dead letter: {_first_error(exc)}") from None


def encode_cancel(job_id: str, at_ms: int) -> bytes:
    """A control record asking every worker to cancel `job_id`."""
    return orjson.dumps({"cancel": job_id, "at": at_ms})


def decode_cancel(raw: bytes | None) -> str | None:
    """The job id a control record asks to cancel, or None if it is not a cancel request."""
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    job_id = value.get("cancel") if isinstance(value, dict) else None
    return job_id if isinstance(job_id, str) else None


def encode_status_batch(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(events)


def decode_status_batch(raw: bytes | None) -> list[dict[str, Any]]:
    """Decode a status record: a list of event objects (a lone object is accepted too)."""
    if raw is None:
        raise DecodeError("record has no value")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"status record is not JSON: {exc}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(e, dict) and isinstance(e.get("job_id"), str) and isinstance(e.get("state"), str)
        for e in value
    ):
        raise DecodeError("status record is not a list of events with job_id and state")
    return value


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"
