"""Request bodies in (`producer.inputs`): content type, JSON, job specs, batches. Pure, no I/O.

Every way a body can be wrong is pinned here, on the parsers themselves; tests/test_api.py
sends a few of the same cases through the app to pin the wiring and the rendering.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobstream.http_errors import ApiError, ItemError, TooLarge, check_content_type
from producer.inputs import parse_batch, parse_job
from producer.job_checks import Limits
from schemas import JobSpec

MAX_BATCH = 50
MAX_PAYLOAD = 1024
MAX_RECORD = 16 * 1024
LIMITS = Limits(max_payload_bytes=MAX_PAYLOAD, max_record_bytes=MAX_RECORD)

JSON = "application/json"
BIG = 2**64  # one past the largest integer the contract takes
BIG_CHILD = b'{"type": "b", "payload": {"n": %d}}' % BIG
BAD_INPUT: list[tuple[str, bytes, str, int, str]] = [
    # (case, body, content type, status, field named in the message)
    ("malformed json", b'{"type": "t",', "application/json", 400, "JSON"),
    ("empty body", b"", "application/json", 400, "JSON"),
    ("unknown field", b'{"type": "t", "colour": 1}', "application/json", 422, "colour"),
    ("bad type", b'{"type": "no spaces"}', "application/json", 422, "type"),
    ("missing type", b'{"payload": {}}', "application/json", 422, "type"),
    ("payload not object", b'{"type": "t", "payload": [1]}', "application/json", 422, "payload"),
    ("payload string", b'{"type": "t", "payload": "x"}', "application/json", 422, "payload"),
    ("wrong type", b'{"type": "t", "max_attempts": "many"}', "application/json", 422, "max_attempts"),
    ("out of range", b'{"type": "t", "max_attempts": 0}', "application/json", 422, "max_attempts"),
    ("bad priority", b'{"type": "t", "priority": "urgent"}', "application/json", 422, "priority"),
    ("bad backoff", b'{"type": "t", "backoff": {"kind": "linear"}}', "application/json", 422, "backoff.kind"),
    ("huge integer", b'{"type": "t", "payload": {"n": 1' + b"0" * 30 + b"}}", JSON, 422, "payload.n"),
    ("integer past 64 bits", b'{"type": "t", "payload": {"a": [0, %d]}}' % BIG, JSON, 422, "payload.a.1"),
    ("integer below 64 bits", b'{"type": "t", "payload": {"n": %d}}' % -BIG, JSON, 422, "payload.n"),
    ("follow-up integer", b'{"type": "a", "then": [%s]}' % BIG_CHILD, JSON, 422, "then.0.payload.n"),
    (
        "follow-up integer, keyed",
        b'{"type": "a", "idempotency_key": "k", "then": [{"type": "b", "then": [%s]}]}' % BIG_CHILD,
        JSON,
        422,
        "then.0.then.0.payload.n",
    ),
    ("infinity", b'{"type": "t", "payload": {"v": Infinity}}', JSON, 422, "payload.v"),
    ("minus infinity", b'{"type": "t", "payload": {"v": {"w": -Infinity}}}', JSON, 422, "payload.v.w"),
    (
        "nan in a follow-up",
        b'{"type": "a", "then": [{"type": "b", "payload": {"v": NaN}}]}',
        JSON,
        422,
        "then.0.payload.v",
    ),
    ("body not object", b"[1, 2]", "application/json", 422, "body"),
    ("form content type", b"type=t", "application/x-www-form-urlencoded", 415, "application/json"),
]

BAD_BATCH: list[tuple[str, bytes, int, str]] = [
    # (case, body, status, field named in the message)
    ("malformed json", b'{"jobs": [', 400, "JSON"),
    ("not an object", b"[]", 422, "body"),
    ("missing jobs", b"{}", 422, "jobs"),
    ("jobs not a list", b'{"jobs": {}}', 422, "jobs"),
    ("empty jobs", b'{"jobs": []}', 422, "jobs"),
    ("unknown field", b'{"jobs": [{"type": "t"}], "mode": 1}', 422, "mode"),
]

# Good items at 0 and 4; the others each refused for a reason of their own (413 for 5).
MIXED_BATCH: list[Any] = [
    {"type": "a", "payload": {"n": 1}},
    {"type": "bad type!"},
    {"type": "b", "colour": "red"},
    {"type": "c", "payload": [1, 2]},
    {"type": "d", "priority": "low", "key": "k"},
    {"type": "e", "payload": {"blob": "x" * (MAX_PAYLOAD + 1)}},
    "not an object",
]


def check_refusal(status: int, answer: dict[str, Any], want: int, named: str) -> None:
    """`answer` (the JSON of a refusal) has status `want` and names `named` as clients read it."""
    assert status == want, answer
    assert named in answer["detail"]
    if want == 400:
        assert "not valid JSON" in answer["detail"] and "line 1" in answer["detail"]
    if want == 422:
        assert answer["errors"][0]["field"] == named
        assert answer["errors"][0]["message"]


def refusal_of_job(body: bytes, content_type: str | None) -> ApiError:
    """What `POST /jobs` refuses the body with, checked in the route's order."""
    with pytest.raises(ApiError) as caught:
        check_content_type(content_type)
        parse_job(body, LIMITS)
    return caught.value


def refusal_of_batch(body: bytes) -> ApiError:
    """What `POST /jobs/batch` refuses a JSON body with as a whole."""
    with pytest.raises(ApiError) as caught:
        parse_batch(body, MAX_BATCH, LIMITS)
    return caught.value


@pytest.mark.parametrize(
    ("case", "body", "ctype", "status", "named"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_job_body_gets_its_own_status_naming_the_field(
    case: str, body: bytes, ctype: str, status: int, named: str
) -> None:
    """Each kind of bad submit body gets its own status and a message naming the field."""
    refused = refusal_of_job(body, ctype)
    check_refusal(refused.status, refused.body(), status, named)


@pytest.mark.parametrize(("case", "body", "status", "named"), BAD_BATCH, ids=[c[0] for c in BAD_BATCH])
def test_bad_batch_envelope_is_refused_whole(case: str, body: bytes, status: int, named: str) -> None:
    """A batch whose envelope is wrong is refused whole, naming the field."""
    refused = refusal_of_batch(body)
    check_refusal(refused.status, refused.body(), status, named)


def test_only_json_content_types_are_accepted() -> None:
    """application/json (any case, with parameters) and application/*+json pass; the rest, or none, is 415."""
    for ok in ("application/json", "Application/JSON; charset=utf-8", "application/vnd.jobs+json"):
        check_content_type(ok)
    for bad in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "jsonx"):
        refused = refusal_of_job(b'{"type": "t"}', bad)
        assert refused.status == 415 and "application/json" in refused.detail, bad


def test_batch_over_max_batch_is_413_naming_the_limit() -> None:
    """A batch over max_batch is refused whole with 413 naming the limit; max_batch jobs pass."""

    def batch_of(n: int) -> bytes:
        return b'{"jobs": [%s]}' % b", ".join([b'{"type": "t"}'] * n)

    assert len(parse_batch(batch_of(MAX_BATCH), MAX_BATCH, LIMITS)) == MAX_BATCH
    refused = refusal_of_batch(batch_of(MAX_BATCH + 1))
    assert isinstance(refused, TooLarge) and refused.body()["limit"] == MAX_BATCH
    assert str(MAX_BATCH) in refused.detail


def test_batch_items_are_judged_one_by_one_in_order() -> None:
    """Each batch item is a spec or its own error, in order; a bad item does not sink the others."""
    items = parse_batch(orjson.dumps({"jobs": MIXED_BATCH}), MAX_BATCH, LIMITS)
    specs = {i: item for i, item in enumerate(items) if isinstance(item, JobSpec)}
    errors = {i: item for i, item in enumerate(items) if isinstance(item, ItemError)}
    assert [(s.type, s.payload, s.priority, s.key) for s in specs.values()] == [
        ("a", {"n": 1}, "normal", None),
        ("d", {}, "low", "k"),
    ]
    assert list(specs) == [0, 4]
    assert {i: (e.status, e.errors[0].field) for i, e in errors.items()} == {
        1: (422, "type"),
        2: (422, "colour"),
        3: (422, "payload"),
        5: (413, "payload"),
        6: (422, "body"),
    }
    assert "must match" in errors[1].message and str(MAX_PAYLOAD) in errors[5].message


def test_batch_refuses_unportable_numbers_per_item() -> None:
    """Items with an integer past 64 bits or NaN anywhere (keyed or not) are 422 naming it; others pass."""
    body = (
        b'{"jobs": [{"type": "a", "then": [{"type": "b", "payload": {"n": %d}}]},'
        b' {"type": "a", "idempotency_key": "k1", "then": [{"type": "b", "payload": {"n": %d}}]},'
        b' {"type": "a", "idempotency_key": "k2", "payload": {"x": [NaN]}},'
        b' {"type": "ok", "payload": {"s": "NaN and Infinity are fine in strings", "n": %d}}]}'
    ) % (BIG, BIG, BIG - 1)
    *refused, ok = parse_batch(body, MAX_BATCH, LIMITS)
    assert [(e.status, e.errors[0].field) for e in refused if isinstance(e, ItemError)] == [
        (422, "then.0.payload.n"),
        (422, "then.0.payload.n"),
        (422, "payload.x.0"),
    ]
    assert isinstance(ok, JobSpec)
    assert ok.payload == {"s": "NaN and Infinity are fine in strings", "n": BIG - 1}
