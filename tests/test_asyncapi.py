"""The AsyncAPI document (`gateway.asyncapi`): committed as docs/asyncapi.json and served by
the gateway, a well-formed AsyncAPI 3.0 document whose every reference resolves, and a
contract the code keeps: the records the codec writes and the frames a real gateway sends
validate against its schemas (jsonschema_rs, which schemathesis brings)."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import orjson
import pytest
from redis.asyncio import Redis

from gateway.asyncapi import asyncapi_document
from gateway.frames import CLIENT_MESSAGES, CLOSE_CODES, SERVER_FRAMES, ErrorCode, frame_model
from gateway.hub import SHUTDOWN_CODE
from gateway.protocol import error_frame, events_frame, parse_message, snapshot_frame, subscribed_frame
from jobstream.access.http import gateway_scope
from jobstream.cursor import CursorError
from jobstream.kafka import make_producer
from jobstream.projection import Projection
from jobstream.settings import Settings
from jobstream.status_publisher import StatusPublisher
from schemas import (
    HEADER_DUE,
    AttemptError,
    Backoff,
    DeadLetter,
    DeadReason,
    JobEnvelope,
    JobSpec,
    JobState,
    Priority,
    Source,
    Topics,
    child_job_id,
    encode_dead_letter,
    encode_job,
    encode_status_batch,
    events,
    job_headers,
    new_job_id,
    now_ms,
)
from tests.test_gateway import gateway_settings, peer, publish, running_gateway

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "asyncapi.json"
REGENERATE = "python -m gateway.asyncapi > docs/asyncapi.json"


def generated(prefix: str = "jobstream") -> dict[str, Any]:
    """The document as JSON has it (what the file and the route hold)."""
    loaded: dict[str, Any] = json.loads(json.dumps(asyncapi_document(prefix)))
    return loaded


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return generated()


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator of `schema` (a message's payload or headers), its `$ref`s resolved in `doc`."""
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": doc["components"]}, validate_formats=True
    )


def component(doc: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    return validator(doc, {"$ref": f"#/components/schemas/{name}"})


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: not a reference inside the document"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


# -- the document: up to date, well-formed ---------------------------------------------------


def test_committed_document_is_up_to_date(doc: dict[str, Any]) -> None:
    """docs/asyncapi.json is what the models say now."""
    assert COMMITTED.exists(), f"docs/asyncapi.json is missing: run `{REGENERATE}`"
    assert json.loads(COMMITTED.read_text()) == doc, f"docs/asyncapi.json is out of date: run `{REGENERATE}`"


def test_the_command_prints_the_document(doc: dict[str, Any]) -> None:
    """The command the message above names prints the document, and nothing on stderr."""
    ran = subprocess.run(
        [sys.executable, "-m", "gateway.asyncapi"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert ran.stderr == "" and json.loads(ran.stdout) == doc
    prefixed = subprocess.run(
        [sys.executable, "-m", "gateway.asyncapi", "--prefix", "acme"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    assert json.loads(prefixed.stdout) == generated("acme")


def test_document_is_well_formed_asyncapi_3(doc: dict[str, Any]) -> None:
    """The required keys; every `$ref` resolves inside the document; each channel's messages
    and servers, each operation's channel and messages (a subset of its channel's) resolve;
    every channel is both written and read; every schema is a valid JSON Schema."""
    assert doc["asyncapi"] == "3.0.0"
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    assert {"servers", "channels", "operations", "components"} <= doc.keys()
    for ref in refs(doc):
        resolve(doc, ref)
    assert {s["protocol"] for s in doc["servers"].values()} == {"ws", "kafka"}
    assert all(isinstance(s["host"], str) for s in doc["servers"].values())
    for name, channel in doc["channels"].items():
        assert isinstance(channel["address"], str) and channel["messages"], name
        for server in channel["servers"]:
            assert server["$ref"].startswith("#/servers/"), name
        for message in channel["messages"].values():
            assert "$ref" in resolve(doc, message["$ref"])["payload"], name
    directions = set()
    for name, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), name
        channel = op["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in doc["channels"], name
        directions.add((channel, op["action"]))
        for part in (op, op.get("reply", {"messages": []})):
            for message in part["messages"]:
                head, _, key = message["$ref"].rpartition("/")
                assert (
                    head == f"#/channels/{channel}/messages" and key in doc["channels"][channel]["messages"]
                )
    assert directions == {(c, a) for c in doc["channels"] for a in ("send", "receive")}
    for name, schema in doc["components"]["schemas"].items():
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            raise AssertionError(f"components.schemas.{name}: {exc}") from None


def test_document_names_every_topic_and_frame(doc: dict[str, Any]) -> None:
    """The topics are the deployment's (`schemas.Topics`); the WebSocket channel carries one
    message per model of `gateway.frames`."""
    topics = Topics("jobstream")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {*topics.job_topics, topics.status, topics.dlq, topics.retry("{tier}"), "/ws"} == addresses
    ws = [resolve(doc, m["$ref"])["payload"]["$ref"] for m in doc["channels"]["ws"]["messages"].values()]
    assert sorted(ws) == sorted(
        f"#/components/schemas/{m.__name__}" for m in (*CLIENT_MESSAGES, *SERVER_FRAMES)
    )
    assert gateway_scope("GET", "/asyncapi.json") is None  # open, like /docs


def test_every_example_keeps_to_its_message(doc: dict[str, Any]) -> None:
    """Each example's payload and headers validate; client messages parse as the gateway does."""
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", []):
            validator(doc, message["payload"]).validate(example["payload"])
            if "headers" in example:
                validator(doc, message["headers"]).validate(example["headers"])
            if name in ("subscribe", "unsubscribe"):
                parse_message(json.dumps(example["payload"]))


# -- real data against the document ------------------------------------------------------------


def test_records_the_codec_writes_keep_to_the_document(doc: dict[str, Any]) -> None:
    """A job with every field, its follow-up, its retry and dead letter, a poison dead letter
    and a status record of each kind of event, as the codec writes them, validate; and
    records that break the contract do not (the check is not vacuous)."""
    at = now_ms()
    then = JobSpec(type="images.thumb", payload={"size": 64}, run_at="2030-01-01T09:30:00Z", ttl_ms=60_000)
    job = JobEnvelope(
        id=new_job_id(), type="images.resize", payload={"w": 640}, priority=Priority.high, key="user-7",
        max_attempts=3, backoff=Backoff(kind="fixed", base_ms=500), timeout_s=30.0, idempotency_key="i-1",
        created_at=at, not_before=at + 1_000, then=[then], expires_at=at + 60_000, schedule="nightly",
        occurrence_at=at, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )  # fmt: skip
    child = JobEnvelope.trusted(child_job_id(job.id, 0), "images.thumb", parent_id=job.id, created_at=at)
    errors = [
        AttemptError(attempt=1, type="ValueError", message="boom", traceback="...", worker="w:1", at=at)
    ]
    retry = job.model_copy(update={"attempt": 2, "errors": [e.model_dump() for e in errors]})
    messages = doc["components"]["messages"]
    for envelope in (job, child, retry):
        component(doc, "JobEnvelope").validate(orjson.loads(encode_job(envelope)))
        validator(doc, messages["job"]["headers"]).validate(text_headers(envelope))
    retry_headers = validator(doc, messages["retryJob"]["headers"])
    retry_headers.validate({**text_headers(retry), HEADER_DUE: str(at + 1_000)})
    assert not retry_headers.is_valid(text_headers(retry))  # a retry record names its due time

    source = Source(topic=Topics().jobs(Priority.high), partition=3, offset=42)
    dead = DeadLetter(id=job.id, type=job.type, reason=DeadReason.exhausted, job=retry, errors=errors,
                      source=source, dead_at=at)  # fmt: skip
    raw = base64.b64encode(b"\x00not json").decode()
    poison = DeadLetter(id="poison:jobstream.jobs.high:3:42", reason=DeadReason.poison, source=source,
                        raw=raw, errors=errors, dead_at=at)  # fmt: skip
    for letter in (dead, poison):
        component(doc, "DeadLetter").validate(orjson.loads(encode_dead_letter(letter)))

    batch = orjson.loads(encode_status_batch(every_kind_of_event(job, child)))
    component(doc, "StatusBatch").validate(batch)

    assert not component(doc, "JobEnvelope").is_valid({"id": job.id})
    assert not component(doc, "StatusBatch").is_valid([])
    assert not component(doc, "StatusBatch").is_valid([{**batch[0], "state": "asleep"}])
    assert not component(doc, "DeadLetter").is_valid(
        {**orjson.loads(encode_dead_letter(dead)), "reason": "bored"}
    )


def text_headers(job: JobEnvelope) -> dict[str, str]:
    return {name: value.decode() for name, value in job_headers(job)}


def every_kind_of_event(job: JobEnvelope, child: JobEnvelope) -> list[dict[str, Any]]:
    """An event from each constructor of `schemas.events`, with the fields its callers add."""
    at = now_ms()
    second = job.model_copy(update={"attempt": 2})
    return [
        events.scheduled(job.model_copy(update={"not_before": at + 1_000}), at),
        events.fired(orjson.loads(encode_job(job)), at),
        events.queued(child, at),
        events.job_event(job, JobState.active, at, worker="host:1", wait_ms=12),
        events.job_event(job, JobState.progress, at, progress={"percent": 50.0, "message": "half"}),
        events.job_event(job, JobState.failed, at, error={"type": "ValueError", "message": "boom"}),
        events.job_event(job, JobState.retrying, at, due_at=at + 1_000, tier="1s", next_attempt=2),
        events.job_event(second, JobState.completed, at, result={"ok": True}, children=[child.id]),
        events.rejected(events.queued(child, at), "the record is too large", at),
        events.cancelled(child.id, child.type, at, "cancelled by the client"),
        events.status_event(job.id, job.type, JobState.replayed, at, replay_of=job.id),
    ]


def test_frames_the_gateway_builds_keep_to_the_document(doc: dict[str, Any]) -> None:
    """Frames from `gateway.protocol`'s helpers validate, an error frame with each code; every
    code the gateway sends is an `ErrorCode`, and every close code is described."""
    job = JobEnvelope(id=new_job_id(), type="images.resize")
    frames = [
        subscribed_frame(2, {"a.b", "c.d"}, True, "1AQA"),
        snapshot_frame([]),
        events_frame(every_kind_of_event(job, job), "1AQA"),
        error_frame("bad message"),
        *(error_frame("why", code) for code in ErrorCode),
    ]
    for frame in map(orjson.loads, frames):
        component(doc, frame_model(frame).__name__).validate(frame)
    errors, closes = sent_codes()
    assert errors <= {c.value for c in ErrorCode}, errors
    assert {1008, 4401, 4403, 1013} <= closes <= CLOSE_CODES.keys(), closes


def sent_codes() -> tuple[set[str], set[int]]:
    """The error codes the gateway's modules send (`code="..."`, and the cursor error's), and
    the close codes (`code=`, `close(...)`, `request_close(...)`, `_admit`'s answers)."""
    errors, closes = {CursorError.code}, {SHUTDOWN_CODE}
    for path in (ROOT / "gateway").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            found: ast.expr | None = None
            if isinstance(node, ast.keyword) and node.arg == "code":
                found = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                found = node.args[0] if node.func.attr in ("close", "request_close") else None
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and node.value.elts:
                found = node.value.elts[0]
            value = found.value if isinstance(found, ast.Constant) else None
            if isinstance(value, str):
                errors.add(value)
            elif isinstance(value, int):
                closes.add(value)
    return errors, closes


async def test_a_gateway_serves_the_document_and_keeps_to_it(settings: Settings, redis: Redis) -> None:
    """`GET /asyncapi.json` (no key needed) is the document of the deployment's topics; every
    frame a real gateway sends (replies, a snapshot from the projection, live and replayed
    events, errors) validates against it, and every message sent validates too."""
    doc = generated(settings.topic_prefix)
    at = now_ms()
    job = JobEnvelope(id=new_job_id(), type="images.resize", key="user-7", created_at=at)
    child = JobEnvelope.trusted(child_job_id(job.id, 0), "images.thumb", parent_id=job.id)
    await Projection(redis, settings.redis_prefix, 3600).apply([events.queued(job, now_ms())])
    producer = make_producer(settings)
    publisher = StatusPublisher(producer, settings.topics.status, settings.status_partitions)
    async with (
        running_gateway(gateway_settings(settings)) as gw, producer, publisher as pub,
        httpx.AsyncClient(base_url=gw.http) as http, peer(gw) as one, peer(gw) as every, peer(gw) as later,
    ):  # fmt: skip
        served = await http.get("/asyncapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        assert served.json() == doc
        messages: list[dict[str, Any]] = [
            {"subscribe": {"jobs": [job.id, "unknown-job"], "types": ["mail.send"]}},
            {"unsubscribe": {"types": ["mail.send"]}},
        ]
        for message in messages:
            await one.send(message)
        await one.send({"subscribe": {"all": True, "cursor": "garbage"}})
        await one.send("not json")
        await one.until(lambda f: "error" in f and "code" not in f)  # the last reply: all taken
        start = (await every.subscribe(all=True))["cursor"]
        sent = every_kind_of_event(job, child)
        await publish(pub, *sent)
        await every.wait_events(len(sent))
        await one.wait_events(sum(e["job_id"] == job.id for e in sent))
        await later.send({"subscribe": {"all": True, "cursor": start}})  # a replay, from the ring
        await later.wait_events(len(sent))
        for p in (one, every, later):
            await p.barrier()
    kinds: dict[str, dict[str, Any]] = {}
    for frame in (f for p in (one, every, later) for f in p.frames):
        model = frame_model(frame)
        component(doc, model.__name__).validate(frame)
        model.model_validate(frame)
        kinds[model.__name__] = frame
    assert kinds.keys() == {m.__name__ for m in SERVER_FRAMES}
    assert [s["id"] for s in kinds["SnapshotFrame"]["snapshot"]] == [job.id]
    assert {f.get("code") for f in one.frames if "error" in f} == {None, "bad_cursor"}
    for message in messages:
        component(doc, f"{next(iter(message)).title()}Message").validate(message)
