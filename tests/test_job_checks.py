"""The checks every submitted job passes before it travels (`producer.job_checks`): pure, no I/O."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from jobstream.http_errors import InvalidInput, TooLarge
from jobstream.settings import ApiSettings
from producer.job_checks import RECORD_OVERHEAD, Limits, check_job, may_hold_nonfinite
from schemas import JobEnvelope, JobSpec, encode_job, job_headers

DEFAULTS = Limits(ApiSettings().max_payload_bytes, ApiSettings().max_record_bytes)
# Kafka's framing of a record alone in its batch: the batch header (61 bytes), the record's
# varints (at most 36 bytes) and each header's two lengths (at most 10 bytes per header).
KAFKA_FRAMING = 61 + 36 + 10 * 4


def spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"type": "t", **fields})


def follow_up(chars: int) -> dict[str, Any]:
    return {"type": "b", "payload": {"s": "x" * chars}}


def test_five_large_follow_ups_are_413_naming_then() -> None:
    """The issue's job, five follow-ups of 250,000 characters each, is over the default record
    limit: 413 naming `then`, the sizes and the setting."""
    job = spec(type="example.noop", then=[follow_up(250_000) for _ in range(5)])
    with pytest.raises(TooLarge) as caught:
        check_job(job, DEFAULTS)
    assert caught.value.errors[0].field == "then"
    assert "max_record_bytes" in caught.value.detail and "follow-ups 1250" in caught.value.detail


def test_record_limit_counts_payload_and_follow_ups_together() -> None:
    """A payload and follow-ups each within their limits but together over the record limit are 413."""
    limits = Limits(max_payload_bytes=8_000, max_record_bytes=20_000)
    check_job(spec(payload={"s": "x" * 7_000}, then=[follow_up(6_000)]), limits)
    with pytest.raises(TooLarge) as caught:
        check_job(spec(payload={"s": "x" * 7_900}, then=[follow_up(7_000)]), limits)
    assert caught.value.errors[0].field == "payload"


def test_follow_up_payload_over_its_limit_is_413_naming_it() -> None:
    """Each follow-up's payload, however deep, is held to max_payload_bytes and named."""
    job = spec(then=[follow_up(10), {"type": "c", "then": [follow_up(10), follow_up(300_000)]}])
    with pytest.raises(TooLarge) as caught:
        check_job(job, DEFAULTS)
    assert caught.value.errors[0].field == "then.1.then.1.payload"
    assert caught.value.detail.startswith("then.1.then.1.payload is 300008 bytes")


def test_record_overhead_bounds_every_other_part_of_the_largest_record() -> None:
    """RECORD_OVERHEAD covers everything in a record but the payload and follow-ups, with every
    other field at its largest and characters that cost most as JSON and as UTF-8."""
    then = [spec(type="b", payload={"n": 1})]
    for char in ("\x01", "\U0001f600"):  # 6 bytes escaped in JSON; 4 bytes in JSON and in UTF-8
        job = JobEnvelope(
            id="0" * 36, type="t" * 128, payload={"s": "x"}, priority="normal", attempt=1,
            max_attempts=100, timeout_s=86_399.999999999, key=char * 256, idempotency_key=char * 256,
            backoff={"kind": "fixed", "base_ms": 86_400_000, "max_ms": 604_800_000, "jitter": 0.123456789},
            created_at=2**43, not_before=2**43, expires_at=2**44, parent_id="0" * 36, replay_of="0" * 36,
            then=then, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        )  # fmt: skip
        value = encode_job(job)
        payload = orjson.dumps(job.payload)
        follow_ups = TypeAdapter(list[JobSpec]).dump_json(then, exclude_defaults=True)
        assert payload in value and follow_ups in value  # measured exactly as the envelope holds them
        headers = sum(len(k) + len(v) for k, v in job_headers(job))
        rest = len(value) - len(payload) - len(follow_ups) + headers + len(job.partition_key.encode())
        assert rest + KAFKA_FRAMING <= RECORD_OVERHEAD


def test_numbers_must_be_portable() -> None:
    """Integers within 64 bits and finite floats pass; others are 422 naming their place."""
    check_job(spec(payload={"a": [-(2**63), 2**64 - 1, 1.5e308]}), DEFAULTS)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"payload": {"a": [0, 2**64]}}, "payload.a.1"),
        ({"payload": {"a": {"b": -(2**63) - 1}}}, "payload.a.b"),
        ({"then": [{"type": "b", "payload": {"n": 2**64}}]}, "then.0.payload.n"),
        ({"payload": {"f": float("inf")}}, "payload.f"),
        ({"then": [{"type": "b", "then": [{"type": "c", "payload": {"f": [float("nan")]}}]}]},
         "then.0.then.0.payload.f.0"),
    ]  # fmt: skip
    for fields, where in cases:
        with pytest.raises(InvalidInput) as caught:
            check_job(spec(**fields), DEFAULTS)
        assert caught.value.errors[0].field == where, fields


def test_nonfinite_walk_is_skipped_only_when_the_body_cannot_hold_one() -> None:
    """The substring test finds NaN and Infinity wherever they are; without it no walk is made."""
    assert may_hold_nonfinite(b'{"v": -Infinity}') and may_hold_nonfinite(b'{"v": [NaN]}')
    assert not may_hold_nonfinite(b'{"v": 1e308, "s": "nan infinity"}')
    check_job(spec(payload={"f": float("nan")}), DEFAULTS, nonfinite=False)  # the caller vouched


def test_run_at_too_far_ahead_is_422() -> None:
    """run_at more than MAX_DELAY_MS ahead is 422 naming run_at."""
    far = dt.datetime.fromtimestamp(time.time() + 400 * 86_400, dt.UTC)
    with pytest.raises(InvalidInput) as caught:
        check_job(spec(run_at=far), DEFAULTS)
    assert caught.value.errors[0].field == "run_at"
