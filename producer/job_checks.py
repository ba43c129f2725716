"""What a job must satisfy, beyond its fields' types, before it may travel. Pure: no I/O.

`check_job` runs on every spec that validated, for `POST /jobs` and each batch item alike,
whether the job is due now or later (`delay_ms`, `run_at`), before any idempotency key
is claimed or anything is stored or sent. It raises `InvalidInput` (422) or `TooLarge`
(413), each naming the field:

- **Numbers.** Every number in a payload, a follow-up's included, is one any JSON reader
  takes back unchanged: an integer within 64 bits (`-2**63` to `2**64 - 1`, what orjson
  writes) or a finite float. JSON has no NaN or Infinity; the parser accepts them, and
  they would be stored as null. 422 naming the place, e.g. `then.0.payload.n`.
- **Payloads.** Each payload, every follow-up's too (each becomes a job of its own), is at
  most `max_payload_bytes` as JSON. 413 naming it.
- **Record.** The job as Kafka will see it, envelope with its follow-ups, headers and key,
  is at most `max_record_bytes`. The envelope is not encoded here: the record is the
  payload and follow-ups as JSON (measured) plus `RECORD_OVERHEAD`, a bound on everything
  else (every other field at its largest, headers, key, Kafka's framing), so the check
  never passes a record that Kafka would find larger. A follow-up's own record is part of
  its parent's, so it passes too. 413 naming what is large.
- **`run_at`** at most `MAX_DELAY_MS` ahead. 422.

Cost on the hot path, a job without follow-ups: one orjson encoding of the payload (it
also checks every integer) and a couple of comparisons. Non-finite numbers cannot be
seen in the parsed value without walking it, so the caller says whether the raw body
could hold one (`may_hold_nonfinite`, a substring search); only then is it walked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from pydantic import TypeAdapter

from jobstream.http_errors import FieldError, InvalidInput, TooLarge
from schemas import JobSpec, now_ms
from schemas.job import MAX_DELAY_MS

__all__ = ["RECORD_OVERHEAD", "Limits", "check_job", "may_hold_nonfinite"]

# Everything in a job record but the payloads and follow-ups, at its largest: the
# envelope's other fields (id, type 128, key and idempotency key 256 characters each
# escaped up to 6 bytes, backoff, timeouts, times, parent id, traceparent), the headers,
# the record key (up to 1 KiB of UTF-8), and Kafka's record and batch framing.
# tests/test_job_checks.py builds that largest job and holds the bound to it.
RECORD_OVERHEAD = 6 * 1024
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

_THEN: TypeAdapter[list[JobSpec]] = TypeAdapter(list[JobSpec])


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int
    max_record_bytes: int


def may_hold_nonfinite(raw: bytes) -> bool:
    """Whether a JSON body could hold NaN or ±Infinity (as a number, or inside a string)."""
    return b"NaN" in raw or b"Infinity" in raw


def check_job(spec: JobSpec, limits: Limits, *, nonfinite: bool = True) -> None:
    """Raise `InvalidInput` or `TooLarge` if `spec` cannot travel; see the module docstring.

    `nonfinite=False` (the body holds no NaN or Infinity) skips walking the payloads.
    """
    if spec.run_at is not None and spec.run_at.timestamp() * 1000 - now_ms() > MAX_DELAY_MS:
        _invalid("run_at", f"must be at most {MAX_DELAY_MS // 86_400_000} days ahead")
    size = _payload_size(spec.payload, "payload", limits, nonfinite)
    then_size = 0
    if spec.then:
        for path, follow_up in _follow_ups(spec.then, "then"):
            _payload_size(follow_up.payload, f"{path}.payload", limits, nonfinite)
        then_size = len(_THEN.dump_json(spec.then, exclude_defaults=True))
    record = size + then_size + RECORD_OVERHEAD
    if record > limits.max_record_bytes:
        field = "then" if then_size > size else "payload"
        message = (
            f"the job would be a Kafka record of up to {record} bytes (payload {size}, "
            f"follow-ups {then_size}, the rest at most {RECORD_OVERHEAD}); "
            f"the limit is {limits.max_record_bytes} bytes (max_record_bytes)"
        )
        raise TooLarge(message, limit=limits.max_record_bytes, errors=[FieldError(field, message)])


def _payload_size(payload: dict[str, Any], field: str, limits: Limits, nonfinite: bool) -> int:
    """The payload's size as JSON, after checking its numbers and its limit."""
    if nonfinite:
        _check_numbers(payload, field)
    try:
        size = len(orjson.dumps(payload))
    except orjson.JSONEncodeError as exc:  # an integer past 64 bits, found and named here
        _check_numbers(payload, field)
        _invalid(field, f"cannot be encoded as JSON: {exc}")
    if size > limits.max_payload_bytes:
        message = (
            f"is {size} bytes as JSON; the limit is {limits.max_payload_bytes} bytes (max_payload_bytes)"
        )
        raise TooLarge(
            f"{field} {message}", limit=limits.max_payload_bytes, errors=[FieldError(field, message)]
        )
    return size


def _follow_ups(specs: list[JobSpec], path: str) -> Iterator[tuple[str, JobSpec]]:
    """Every follow-up, depth first, with its place (`then.0`, `then.0.then.1`, ...)."""
    for i, spec in enumerate(specs):
        here = f"{path}.{i}"
        yield here, spec
        if spec.then:
            yield from _follow_ups(spec.then, f"{here}.then")


def _check_numbers(value: Any, path: str) -> None:
    """Raise `InvalidInput` at the first integer past 64 bits or non-finite float in `value`."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((f"{where}.{k}", x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{where}.{i}", x) for i, x in reversed(list(enumerate(v))))
        elif isinstance(v, float) and not math.isfinite(v):
            _invalid(where, "must be a finite number: JSON has no NaN or Infinity")
        elif isinstance(v, int) and not isinstance(v, bool) and not INT_MIN <= v <= INT_MAX:
            _invalid(where, "must be an integer within 64 bits (-2**63 to 2**64 - 1)")


def _invalid(field: str, message: str) -> NoReturn:
    raise InvalidInput(f"invalid job: field '{field}' {message}", [FieldError(field, message)])
