"""The producer API against the real broker and Redis: submit, batch, lookup, bad input, health."""

from __future__ import annotations

import asyncio
import datetime as dt
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.types import Message, Scope

from jobstream.projection import Projection
from jobstream.settings import ApiSettings, Settings
from producer import create_app
from producer.app import ApiApp
from producer.groupcommit import GroupCommit, GroupCommitClosed
from producer.runtime import Runtime
from schemas import Priority, decode_job
from tests.conftest import MS
from tests.helpers import StatusLog, asgi_app, asgi_client, read_topic
from tests.test_inputs import (
    BAD_BATCH,
    BAD_INPUT,
    MAX_BATCH,
    MAX_PAYLOAD,
    MAX_RECORD,
    MIXED_BATCH,
    check_refusal,
)

MAX_BODY = 64 * 1024
WAIT = 15_000 * MS  # how long a test waits for records to show up


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    settings: ApiSettings
    app: FastAPI


@pytest.fixture
def api_settings(settings: Settings) -> ApiSettings:
    return ApiSettings(
        **settings.model_dump(),
        max_batch=MAX_BATCH,
        max_payload_bytes=MAX_PAYLOAD,
        max_body_bytes=MAX_BODY,
        max_record_bytes=MAX_RECORD,
    )


@pytest.fixture
async def api(api_settings: ApiSettings) -> AsyncIterator[Api]:
    app = create_app(api_settings)
    async with asgi_app(app, base_url="http://api") as (client, state):
        yield Api(client, state["runtime"], api_settings, app)


async def internal_errors(api: Api) -> float:
    value = api.runtime.metrics.registry.get_sample_value("jobstream_api_http_internal_errors_total")
    return value or 0.0


def submitted(api: Api) -> float | None:
    """The API's count of accepted jobs of priority normal."""
    registry = api.runtime.metrics.registry
    return registry.get_sample_value("jobstream_api_jobs_submitted_total", {"priority": "normal"})


# -- submit -----------------------------------------------------------------------------


async def test_submit_produces_record_and_queued_status(api: Api) -> None:
    """POST /jobs answers 202 after the record is on its priority topic, keyed, partitioned by
    crc32(key), with headers, and a queued event is on the status topic."""
    body = {"type": "email.send", "payload": {"to": "a@b.c"}, "priority": "high", "key": "user-7"}
    r = await api.client.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["state"] == "queued"
    job_id = answer["id"]

    topics = api.settings.topics
    [rec] = await read_topic(api.settings, topics.jobs(Priority.high), 1, WAIT)
    assert rec.key == b"user-7"
    assert rec.partition == zlib.crc32(b"user-7") % api.settings.partitions
    headers = dict(rec.headers)
    assert headers["js-type"] == b"email.send"
    assert headers["js-attempt"] == b"1"
    assert headers["js-schema"] == b"1"
    env = decode_job(rec.value)
    assert (env.id, env.type, env.payload, env.priority) == (job_id, "email.send", {"to": "a@b.c"}, "high")
    assert (env.attempt, env.max_attempts, env.key) == (1, None, "user-7")  # unset: worker decides
    assert env.created_at > 0

    async with StatusLog(api.settings) as status:
        await status.wait_for(lambda: job_id in status.events, WAIT, f"the queued event of {job_id}")
    event = status.events[job_id][0]
    assert (event["state"], event["type"], event["attempt"], event["priority"]) == (
        "queued",
        "email.send",
        1,
        "high",
    )


async def test_lookup_right_after_submit_finds_queued(api: Api) -> None:
    """GET /jobs/{id} right after a 202 finds the job queued (the projection was written first)."""
    r = await api.client.post("/jobs", json={"type": "report", "max_attempts": 5})
    job_id = r.json()["id"]
    r = await api.client.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"] == job_id
    assert (job["type"], job["state"], job["attempt"]) == ("report", "queued", 1)
    assert job["created_at"] > 0 and job["updated_at"] >= job["created_at"]
    assert job["error"] is None and job["result"] is None


async def test_record_gives_back_the_job_as_submitted(api: Api) -> None:
    """GET /jobs/{id}/record reads a job's envelope back, payload included: from its partition
    among other jobs' records (keyless, and keyed with others sharing the key), and from Redis
    while it is delayed; a job whose record is not there is 404 saying so."""
    crowd: list[dict[str, Any]] = [{"type": "t", "payload": {"n": i}} for i in range(300)]
    for spec in crowd[::3]:
        spec["key"] = "shared"
    rows = []
    for start in range(0, len(crowd), MAX_BATCH):
        r = await api.client.post("/jobs/batch", json={"jobs": crowd[start : start + MAX_BATCH]})
        rows += r.json()["results"]
    picks = {rows[i]["id"]: crowd[i] for i in (0, 1, 150, 299)}  # keyed, keyless, keyed, keyless
    delayed = await api.client.post(
        "/jobs", json={"type": "later", "payload": {"w": 64}, "delay_ms": 3_600_000}
    )
    picks[delayed.json()["id"]] = {"type": "later", "payload": {"w": 64}}

    for job_id, spec in picks.items():
        r = await api.client.get(f"/jobs/{job_id}/record")
        assert r.status_code == 200, r.text
        found = r.json()
        assert (found["job"]["id"], found["job"]["payload"], found["job"].get("key")) == (
            job_id, spec["payload"], spec.get("key"),
        )  # fmt: skip
        if spec["type"] == "later":
            assert (found["source"], found["topic"]) == ("delayed", None)
        else:
            key = (spec.get("key") or job_id).encode()
            assert (found["source"], found["topic"]) == ("kafka", api.settings.topics.jobs(Priority.normal))
            assert found["partition"] == zlib.crc32(key) % api.settings.partitions
            assert found["offset"] >= 0 and found["timestamp"] > 0

    # known to the projection, but no record where it says: 404 naming where it looked
    await api.runtime.projection.apply(
        [{"job_id": "ghost", "type": "t", "state": "queued", "attempt": 1, "at": 1, "priority": "low"}]
    )
    r = await api.client.get("/jobs/ghost/record")
    assert r.status_code == 404 and "low topic" in r.json()["detail"], r.text


async def test_concurrent_submits_all_queued(api: Api) -> None:
    """Many concurrent submits each get their own id and are all found queued."""
    answers = await asyncio.gather(*(api.client.post("/jobs", json={"type": "t"}) for _ in range(100)))
    assert {r.status_code for r in answers} == {202}
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 100
    looks = await asyncio.gather(*(api.client.get(f"/jobs/{i}") for i in ids))
    assert {r.json()["state"] for r in looks} == {"queued"}


async def test_batch_answers_per_item_in_order(api: Api) -> None:
    """A batch with valid and invalid items answers one result per item, in order; only the
    valid ones reach Kafka."""
    jobs = MIXED_BATCH
    r = await api.client.post("/jobs/batch", json={"jobs": jobs})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res["index"] for res in results] == list(range(len(jobs)))
    assert results[0]["state"] == "queued" and results[4]["state"] == "queued"
    assert results[1]["error"]["status"] == 422 and "'type'" in results[1]["error"]["message"]
    assert "must match" in results[1]["error"]["message"]
    assert results[2]["error"]["status"] == 422 and "'colour'" in results[2]["error"]["message"]
    assert results[3]["error"]["status"] == 422 and "'payload'" in results[3]["error"]["message"]
    assert results[5]["error"]["status"] == 413 and str(MAX_PAYLOAD) in results[5]["error"]["message"]
    assert results[6]["error"]["status"] == 422

    topics = api.settings.topics
    [normal] = await read_topic(api.settings, topics.jobs(Priority.normal), 1, WAIT)
    [low] = await read_topic(api.settings, topics.jobs(Priority.low), 1, WAIT)
    assert decode_job(normal.value).id == results[0]["id"]
    assert decode_job(low.value).id == results[4]["id"]
    assert low.key == b"k"
    r = await api.client.get(f"/jobs/{results[4]['id']}")
    assert r.json()["state"] == "queued"


async def test_batch_all_valid(api: Api) -> None:
    """A full batch of valid jobs is queued entirely, ids unique and findable."""
    r = await api.client.post("/jobs/batch", json={"jobs": [{"type": "t"}] * MAX_BATCH})
    results = r.json()["results"]
    assert len({res["id"] for res in results}) == MAX_BATCH
    looks = await asyncio.gather(*(api.client.get(f"/jobs/{res['id']}") for res in results))
    assert {x.json()["state"] for x in looks} == {"queued"}


# -- limits -----------------------------------------------------------------------------


async def test_oversized_batch_is_413(api: Api) -> None:
    """A batch over max_batch is refused whole with 413 naming the limit."""
    r = await api.client.post("/jobs/batch", json={"jobs": [{"type": "t"}] * (MAX_BATCH + 1)})
    assert r.status_code == 413
    assert str(MAX_BATCH) in r.json()["detail"]


async def test_oversized_payload_is_413(api: Api) -> None:
    """A payload over max_payload_bytes (as JSON) is refused with 413 naming the limit."""
    r = await api.client.post("/jobs", json={"type": "t", "payload": {"x": "y" * MAX_PAYLOAD}})
    assert r.status_code == 413
    assert str(MAX_PAYLOAD) in r.json()["detail"]


@pytest.mark.parametrize("when", ["now", "delay_ms", "run_at"])
async def test_job_over_the_record_limit_is_413_naming_then(api: Api, when: str) -> None:
    """A job whose follow-ups, each within max_payload_bytes, make its record larger than
    max_record_bytes is 413 naming `then` and the setting, due now or later, alone or in a batch;
    nothing is sent or stored."""
    then = [
        {"type": "b", "payload": {"s": "x" * (MAX_PAYLOAD - 20)}} for _ in range(MAX_RECORD // MAX_PAYLOAD)
    ]
    in_an_hour = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    due: dict[str, dict[str, Any]] = {"now": {}, "delay_ms": {"delay_ms": 60_000}}
    due["run_at"] = {"run_at": in_an_hour.isoformat()}
    job = {"type": "a", **due[when], "then": then}
    r = await api.client.post("/jobs", json=job)
    assert r.status_code == 413, r.text
    answer = r.json()
    assert "max_record_bytes" in answer["detail"] and answer["limit"] == MAX_RECORD
    assert answer["errors"][0]["field"] == "then"
    r = await api.client.post("/jobs", json={**job, "idempotency_key": "k"})
    assert r.status_code == 413, r.text
    r = await api.client.post("/jobs/batch", json={"jobs": [job, {**job, "idempotency_key": "k"}]})
    errors = [res["error"] for res in r.json()["results"]]
    assert [e["status"] for e in errors] == [413, 413] and errors[0]["errors"][0]["field"] == "then"
    assert submitted(api) == 0
    assert await api.runtime.delayed.store.counts() == (0, 0)


async def test_follow_up_payload_over_the_limit_is_413_naming_it(api: Api) -> None:
    """A follow-up's payload is held to max_payload_bytes like the job's own, and named."""
    r = await api.client.post(
        "/jobs", json={"type": "a", "then": [{"type": "b", "payload": {"s": "x" * MAX_PAYLOAD}}]}
    )
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["field"] == "then.0.payload"
    assert str(MAX_PAYLOAD) in r.json()["detail"]


async def test_oversized_body_with_length_is_413(api: Api) -> None:
    """A declared Content-Length over max_body_bytes is refused before the body is read."""
    r = await api.client.post(
        "/jobs", content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert str(MAX_BODY) in r.json()["detail"]


async def test_oversized_chunked_body_is_413(api: Api) -> None:
    """A chunked body (no Content-Length) is cut off with 413 once it crosses the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    r = await api.client.post("/jobs/batch", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "max_body_bytes" in r.json()["detail"]


# -- bad input --------------------------------------------------------------------------
# Every case is pinned on the parsers in tests/test_inputs.py; a few go through the app here.

JSON = "application/json"
APP_JOB_CASES = [
    c for c in BAD_INPUT if c[0] in {"malformed json", "follow-up integer, keyed", "form content type"}
]
APP_BATCH_CASES = [c for c in BAD_BATCH if c[0] in {"malformed json", "unknown field"}]


@pytest.mark.parametrize(
    ("case", "body", "ctype", "status", "named"), APP_JOB_CASES, ids=[c[0] for c in APP_JOB_CASES]
)
async def test_bad_input_gets_clear_error(
    api: Api, case: str, body: bytes, ctype: str, status: int, named: str
) -> None:
    """A bad submit body is answered with its own status and a message naming the field, not a 500."""
    r = await api.client.post("/jobs", content=body, headers={"content-type": ctype})
    check_refusal(r.status_code, r.json(), status, named)
    assert await internal_errors(api) == 0


@pytest.mark.parametrize(
    ("path", "body"), [("/jobs", b'{"type": "t"}'), ("/jobs/batch", b'{"jobs": [{"type": "t"}]}'),
                       ("/dlq/replay", b"{}")],
)  # fmt: skip
async def test_body_without_content_type_is_415(api: Api, path: str, body: bytes) -> None:
    """A JSON body sent without a Content-Type (what a form or a plain cross-site fetch does)
    is 415 asking for application/json; nothing is submitted."""
    r = await api.client.post(path, content=body)
    assert "content-type" not in r.request.headers
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"]
    assert submitted(api) == 0


@pytest.mark.parametrize(
    ("case", "body", "status", "named"), APP_BATCH_CASES, ids=[c[0] for c in APP_BATCH_CASES]
)
async def test_bad_batch_envelope(api: Api, case: str, body: bytes, status: int, named: str) -> None:
    """A batch whose envelope is wrong is refused whole, naming the field, not a 500."""
    r = await api.client.post("/jobs/batch", content=body, headers={"content-type": "application/json"})
    check_refusal(r.status_code, r.json(), status, named)
    assert await internal_errors(api) == 0


async def test_batch_refuses_unportable_numbers_per_item(api: Api) -> None:
    """Batch items with an integer past 64 bits or a non-finite number anywhere in the job (keyed
    or not) are 422 naming the field; the other items are queued."""
    big = 2**64
    body = (
        b'{"jobs": [{"type": "a", "then": [{"type": "b", "payload": {"n": %d}}]},'
        b' {"type": "a", "idempotency_key": "k1", "then": [{"type": "b", "payload": {"n": %d}}]},'
        b' {"type": "a", "idempotency_key": "k2", "payload": {"x": [NaN]}},'
        b' {"type": "ok", "payload": {"s": "NaN and Infinity are fine in strings", "n": %d}}]}'
    ) % (big, big, big - 1)
    r = await api.client.post("/jobs/batch", content=body, headers={"content-type": JSON})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    fields = [res["error"]["errors"][0]["field"] for res in results[:3]]
    assert fields == ["then.0.payload.n", "then.0.payload.n", "payload.x.0"]
    assert {res["error"]["status"] for res in results[:3]} == {422}
    assert results[3]["state"] == "queued"
    [rec] = await read_topic(api.settings, api.settings.topics.jobs(Priority.normal), 1, WAIT)
    assert decode_job(rec.value).payload == {"s": "NaN and Infinity are fine in strings", "n": big - 1}
    assert await internal_errors(api) == 0


async def test_unknown_id_is_404(api: Api) -> None:
    """GET of an id nobody submitted is 404 naming the id."""
    r = await api.client.get("/jobs/0190f1e2-0000-7000-8000-000000000000")
    assert r.status_code == 404
    assert r.json() == {"detail": "no job with id 0190f1e2-0000-7000-8000-000000000000"}


async def test_malformed_id_is_422(api: Api) -> None:
    """GET with an id that cannot be a job id is 422 saying what an id looks like."""
    r = await api.client.get("/jobs/not%20an%20id!")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "id"


async def test_genuine_bug_is_clean_500(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """An exception from a bug becomes a logged traceback and a 500 JSON without details."""

    async def broken() -> None:
        raise RuntimeError("boom")

    api.app.add_api_route("/broken", broken)
    r = await api.client.get("/broken")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert "boom" not in r.text
    assert await internal_errors(api) == 1
    assert any(rec.exc_info for rec in caplog.records if rec.name == "jobstream.producer")


async def test_post_jobs_from_a_program_is_answered_as_through_the_stack(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`POST /jobs` without `Origin` goes ahead of the framework's stack (`ApiApp.front`);
    the same requests from the API's own page (`Origin` set) go through it: the answers
    agree, and a bug on the front path is a clean, counted 500 too."""
    same_site = {"origin": str(api.client.base_url).rstrip("/")}  # its own page
    app, fronted = cast(ApiApp, api.app), 0
    front = app.front
    assert front is not None

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        nonlocal fronted
        fronted += 1
        await front(scope, receive, send)

    monkeypatch.setattr(app, "front", counted)
    cases = [
        (b'{"type": "example.noop"}', {"content-type": JSON}),
        (b'{"type": ', {"content-type": JSON}),
        (b'{"type": "example.noop"}', {}),
        (b" " * (MAX_BODY + 1), {"content-type": JSON}),
    ]
    for body, headers in cases:
        ahead = await api.client.post("/jobs", content=body, headers=headers)
        stack = await api.client.post("/jobs", content=body, headers={**headers, **same_site})
        assert ahead.status_code == stack.status_code, (body[:40], ahead.text, stack.text)
        if ahead.status_code == 202:
            assert ahead.json().keys() == stack.json().keys() == {"id", "state"}
        else:
            assert ahead.json() == stack.json()
    assert fronted == len(cases)  # the requests without Origin, and only they

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.runtime.submitter, "submit_many", broken)
    r = await api.client.post("/jobs", content=b'{"type": "example.noop"}', headers={"content-type": JSON})
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert await internal_errors(api) == 1


# -- health and outages ---------------------------------------------------------------


async def test_health_readiness_and_metrics(api: Api) -> None:
    """healthz is ok, readyz reports both services ok, and metrics count submitted jobs."""
    assert (await api.client.get("/healthz")).json() == {"ok": True}
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"kafka": "ok", "redis": "ok"}
    await api.client.post("/jobs", json={"type": "t", "priority": "low"})
    await api.client.post("/jobs", content=b"{", headers={"content-type": "application/json"})
    text = (await api.client.get("/metrics")).text
    assert 'jobstream_api_jobs_submitted_total{priority="low"} 1.0' in text
    assert 'jobstream_api_submit_rejected_total{reason="invalid_json"} 1.0' in text
    assert "jobstream_api_submit_latency_seconds_bucket" in text


async def test_kafka_known_down_fails_fast(api: Api) -> None:
    """With Kafka known down, submits answer 503 with Retry-After naming Kafka, and send nothing."""
    health = api.runtime.health
    await health.close()  # keep the monitor from flipping it back while we look
    health.mark_down("kafka", "test says so")
    r = await api.client.post("/jobs", json={"type": "t"})
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["service"] == "kafka" and "Kafka" in r.json()["detail"]
    r = await api.client.post("/jobs/batch", json={"jobs": [{"type": "t"}]})
    assert r.status_code == 503 and r.json()["service"] == "kafka"
    r = await api.client.get("/readyz")
    assert r.status_code == 503 and r.json()["redis"] == "ok" and "kafka" in r.json()["detail"]
    producer = api.runtime.producer
    for topic in api.settings.topics.job_topics:
        parts = [p for p in await producer.partitions_for(topic)]
        assert parts  # topics exist; nothing was sent
    assert submitted(api) == 0


async def test_monitor_flips_back(api: Api) -> None:
    """A service marked down is seen up again by the monitor's next check."""
    api.runtime.health.mark_down("kafka", "blip")
    async with asyncio.timeout(WAIT):
        await api.runtime.health.wait_for("kafka", up=True)
    assert (await api.client.post("/jobs", json={"type": "t"})).status_code == 202


async def test_redis_down_still_accepts(api: Api) -> None:
    """With Redis down the job is in Kafka, so submit still answers 202; lookups answer 503."""
    health = api.runtime.health
    await health.close()
    health.mark_down("redis", "test says so")
    r = await api.client.post("/jobs", json={"type": "t"})
    assert r.status_code == 202
    job_id = r.json()["id"]
    [rec] = await read_topic(api.settings, api.settings.topics.jobs(Priority.normal), 1, WAIT)
    assert decode_job(rec.value).id == job_id
    r = await api.client.get(f"/jobs/{job_id}")
    assert r.status_code == 503 and r.json()["service"] == "redis"


# -- group commit -----------------------------------------------------------------------


async def test_group_commit_coalesces_concurrent_writes() -> None:
    """Writes made while a flush runs are flushed together in the next one, in order."""
    flushed: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> None:
        flushed.append(items)
        await gate.wait()

    async with GroupCommit(flush) as gc:
        first = gc.write([0])
        await asyncio.sleep(0)  # let the writer take the first item
        rest = [gc.write([i, i + 100]) for i in range(1, 6)]
        gate.set()
        await asyncio.gather(first, *rest)
    assert flushed == [[0], [1, 101, 2, 102, 3, 103, 4, 104, 5, 105]]


async def test_group_commit_failure_reaches_every_writer() -> None:
    """A failed flush fails the futures of every write it held, and the next flush goes on."""
    calls = 0

    async def flush(items: list[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")

    async with GroupCommit(flush) as gc:
        a, b = gc.write(["a"]), gc.write(["b"])
        results = await asyncio.gather(a, b, return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        await gc.write(["c"])


async def test_group_commit_bounds_flush_and_closes() -> None:
    """Flushes hold at most max_items (a write is never split); close flushes what is pending
    and refuses later writes."""
    sizes: list[int] = []

    async def flush(items: list[int]) -> None:
        sizes.append(len(items))

    gc: GroupCommit[int] = GroupCommit(flush, max_items=4)
    await gc.start()
    futs = [gc.write([1, 2, 3]) for _ in range(3)]
    await gc.close()
    await asyncio.gather(*futs)
    assert sizes == [3, 3, 3]
    with pytest.raises(GroupCommitClosed):
        await gc.write([1])
    await gc.close()  # idempotent


async def test_group_commit_over_projection(redis: Redis, prefix: str) -> None:
    """Concurrent projection writes through the group commit land in Redis in few round trips,
    and a later state is never overwritten by an earlier one."""
    projection = Projection(redis, "{" + prefix + "}", 60)
    gc: GroupCommit[dict[str, Any]] = GroupCommit(projection.apply)
    async with gc:
        events = [
            {"job_id": f"j{i}", "type": "t", "state": "queued", "attempt": 1, "at": 1_700_000_000_123}
            for i in range(1200)
        ]
        await asyncio.gather(*(gc.write([e]) for e in events))
        assert gc.flushes <= 2
        failed = {"type": "Boom", "message": 'ünïcode "quoted"', "traceback": None}
        await gc.write(
            [{"job_id": "j0", "type": "t", "state": "failed", "attempt": 2, "at": 5, "error": failed}]
        )
        await gc.write([{"job_id": "j0", "type": "t", "state": "queued", "attempt": 1, "at": 9}])
    got = [await projection.get(f"j{i}") for i in range(1200)]
    assert all(g is not None and g["state"] == "queued" for g in got[1:])
    assert got[1] is not None and got[1]["created_at"] == got[1]["updated_at"] == 1_700_000_000_123
    j0 = got[0]
    assert j0 is not None
    assert (j0["state"], j0["attempt"], j0["updated_at"], j0["error"]) == ("failed", 2, 5, failed)


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch"])
async def test_body_cut_by_a_disconnect_submits_nothing(api: Api, path: str) -> None:
    """A request whose client leaves (or times out) before the declared body has all arrived
    submits nothing, even if the part that came is valid JSON, and gets no answer."""
    body = b'{"type": "example.echo"}' if path == "/jobs" else b'{"jobs": [{"type": "example.echo"}]}'
    incoming: list[Message] = [
        {"type": "http.request", "body": body, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body) + 10).encode())]
    scope: Scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
                    "query_string": b"", "headers": headers, "state": {"runtime": api.runtime},
                    "http_version": "1.1", "scheme": "http", "server": ("api", 80), "client": ("c", 1),
                    "root_path": "", "asgi": {"version": "3.0"}}  # fmt: skip
    await api.app(scope, receive, send)
    assert [m for m in sent if m["type"] == "http.response.start" and m["status"] < 400] == []
    registry = api.runtime.metrics.registry
    assert registry.get_sample_value("jobstream_api_jobs_submitted_total", {"priority": "normal"}) == 0
    # a client leaving is no bug
    assert registry.get_sample_value("jobstream_api_http_internal_errors_total") == 0


async def test_a_job_the_broker_refuses_is_413_and_harms_no_other_submit(settings: Settings) -> None:
    """With limits above the broker's (1 MiB records), a job Kafka refuses answers 413, and
    the submits sent beside it and after it are accepted (the producer is not left broken)."""
    big_limit = 4 * 1024 * 1024
    api_settings = ApiSettings(
        **{**settings.model_dump(), "max_payload_bytes": big_limit, "max_record_bytes": big_limit}
    )
    async with asgi_client(create_app(api_settings)) as client:
        big = {"type": "example.noop", "key": "k", "payload": {"blob": "x" * 1_300_000}}
        small = {"type": "example.noop", "key": "k"}
        answers = await asyncio.gather(
            client.post("/jobs", json=big), *(client.post("/jobs", json=small) for _ in range(10))
        )
        assert answers[0].status_code == 413, answers[0].text
        assert "make the job smaller" in answers[0].json()["detail"]
        assert [r.status_code for r in answers[1:]] == [202] * 10
        after = [await client.post("/jobs", json=small) for _ in range(10)]
        assert [r.status_code for r in after] == [202] * 10
