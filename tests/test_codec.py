"""The codec and the wire models."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from schemas import (
    DecodeError,
    JobEnvelope,
    JobSpec,
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


def test_a_trusted_envelope_is_what_model_construct_makes() -> None:
    """`JobEnvelope.trusted` (the submit path's) equals `model_construct`: values, fields
    set, encoding; defaults not shared between envelopes; unknown fields refused."""
    spec = JobSpec.model_validate(
        {"type": "a.b", "payload": {"n": 1}, "key": "k", "then": [{"type": "c.d"}], "backoff": {"base_ms": 5}}
    )
    full = dict(
        id="j1", type=spec.type, payload=spec.payload, priority=Priority.high, attempt=1, max_attempts=3,
        backoff=spec.backoff, timeout_s=30.0, key=spec.key, idempotency_key="i", created_at=7, then=spec.then,
        not_before=9, expires_at=11, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )  # fmt: skip
    for fields in (full, {"id": "j2", "type": "a.b"}, {"id": "j3", "type": "a.b", "created_at": 5}):
        built, reference = JobEnvelope.trusted(**fields), JobEnvelope.model_construct(**fields)
        assert built == reference and built.model_fields_set == reference.model_fields_set
        assert encode_job(built) == encode_job(reference)
        assert decode_job(encode_job(built)) == JobEnvelope.model_validate(fields)
    one, two = JobEnvelope.trusted(id="a", type="t"), JobEnvelope.trusted(id="b", type="t")
    one.errors.append({"attempt": 1})
    one.payload["x"] = 1
    assert two.errors == [] and two.payload == {} and JobEnvelope.trusted(id="c", type="t").then == []
    with pytest.raises(TypeError, match="paylod"):
        JobEnvelope.trusted(id="a", type="t", paylod={})


def test_ids_are_unique_valid_uuid7_across_refills_of_the_random_pool() -> None:
    """Ids drawn from the buffered random bytes: unique, version 7, RFC 9562 variant, over
    many refills of the pool, with the time in their first 48 bits."""
    ids = [new_job_id(at_ms=1_234) for _ in range(2_000)]  # 20 000 random bytes: five pools
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and u.int >> 80 == 1_234


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    """The random pool is not shared through fork: the same millisecond gives two ids."""
    new_job_id()  # the pool holds bytes the child would reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, new_job_id(at_ms=5).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_job_id(at_ms=5) and child[:13] == new_job_id(at_ms=5)[:13]


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
