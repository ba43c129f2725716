"""The codec and the wire models."""

from __future__ import annotations

import time

import pytest

from schemas import (
    DecodeError,
    JobEnvelope,
    Priority,
    Topics,
    decode_job,
    decode_status_batch,
    encode_job,
    encode_status_batch,
    new_job_id,
    partition_for,
    state_rank,
)


def test_job_round_trip() -> None:
    """A job envelope decodes to what was encoded."""
    job = JobEnvelope(id=new_job_id(), type="a.b", payload={"x": [1, 2]}, priority=Priority.high, key="k")
    assert decode_job(encode_job(job)) == job


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (None, "no value"),
        (b"\xff\xfe not json", "not a job envelope"),
        (b"[]", "not a job envelope"),
        (b'{"id": "x"}', "type"),
        (b'{"id": "x", "type": "bad type!"}', "type"),
    ],
)
def test_poison_raises_decode_error_saying_why(raw: bytes | None, why: str) -> None:
    """Bytes that are not a job raise DecodeError with the reason."""
    with pytest.raises(DecodeError, match=why):
        decode_job(raw)


def test_status_batch_round_trip_and_validation() -> None:
    """A status record is a list of events; junk is refused."""
    events = [{"job_id": "a", "type": "t", "state": "queued", "at": 1}]
    assert decode_status_batch(encode_status_batch(events)) == events
    assert decode_status_batch(b'{"job_id": "a", "state": "active"}') == [{"job_id": "a", "state": "active"}]
    for junk in (b"nope", b"[1, 2]", b'[{"state": "x"}]'):
        with pytest.raises(DecodeError):
            decode_status_batch(junk)


def test_ids_are_uuid7_and_sort_by_time() -> None:
    """Ids are version-7 UUIDs whose order follows creation time."""
    a = new_job_id(at_ms=1_000)
    b = new_job_id(at_ms=2_000)
    assert a < b and a[14] == "7" and len(a) == 36
    assert new_job_id() > new_job_id(at_ms=int(time.time() * 1000) - 10)


def test_a_jobs_status_partition_is_stable() -> None:
    """A job's status partition depends only on its id and the partition count."""
    assert partition_for("abc", 6) == partition_for("abc", 6)
    assert {partition_for(new_job_id(), 3) for _ in range(200)} == {0, 1, 2}


def test_state_rank_never_moves_back_within_an_attempt() -> None:
    """Later states rank higher; a new attempt outranks the previous one's end."""
    order = ["queued", "active", "progress", "completed"]
    ranks = [state_rank(s, 1) for s in order]
    assert ranks == sorted(ranks)
    assert state_rank("active", 2) > state_rank("failed", 1)


def test_topic_names_carry_the_prefix() -> None:
    """Every topic name starts with the prefix; priority is read back from a job topic."""
    t = Topics("p")
    assert t.job_topics == ("p.jobs.high", "p.jobs.normal", "p.jobs.low")
    assert t.priority_of("p.jobs.low") is Priority.low
    assert t.priority_of("p.jobs.status") is None
