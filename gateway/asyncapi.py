"""The AsyncAPI 3.0 document of the WebSocket stream (`/ws`) and the Kafka topics.

The schemas are generated from the models the code uses (`schemas` for the records,
`gateway.frames` for the frames), as `producer.openapi` does for the HTTP API, and the
examples are built with the gateway's and the codec's own helpers. The gateway serves it
at `GET /asyncapi.json` with its deployment's topic names; `docs/asyncapi.json` is the
default deployment's: `python -m gateway.asyncapi > docs/asyncapi.json` (tests/test_asyncapi.py
says when it is out of date, and validates real frames and records against it).

The operations are jobstream's, as one application: it receives client messages on `/ws`
and sends frames; on a topic, `send` says which processes write it, `receive` which read it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

import orjson
from pydantic import BaseModel, Field, RootModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.cursor import encode_cursor
from gateway.frames import CLIENT_MESSAGES, CLOSE_CODES, SERVER_FRAMES, ErrorCode
from gateway.protocol import error_frame, events_frame, subscribed_frame
from jobstream.settings import Settings
from jobstream.status_publisher import MAX_EVENTS_PER_RECORD
from schemas import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    HEADER_SCHEMA,
    HEADER_TRACEPARENT,
    HEADER_TYPE,
    SCHEMA_VERSION,
    TYPE_PATTERN,
    DeadLetter,
    JobEnvelope,
    JobState,
    Priority,
    StatusEvent,
    Topics,
    encode_job,
    events,
    record_headers,
)

__all__ = ["StatusBatch", "asyncapi_document"]

_SCHEMAS = "#/components/schemas/{model}"
_KAFKA = "0.5.0"  # the Kafka bindings' version
_TIERS: list[str] = Settings.model_fields["retry_tiers"].default.split(",")  # not Settings(): no env

_SERVERS = {
    "gateway": {
        "host": "127.0.0.1:8001",
        "protocol": "ws",
        "description": "`jobstream gateway` (its default address). With JOBSTREAM_AUTH=required "
        "a connection needs an API key with the scope `read`.",
        "security": [
            {"$ref": "#/components/securitySchemes/apiKey"},
            {"$ref": "#/components/securitySchemes/wsToken"},
        ],
    },
    "kafka": {
        "host": "127.0.0.1:9092",
        "protocol": "kafka",
        "description": "The deployment's brokers (JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS; TLS and SASL "
        "by JOBSTREAM_KAFKA_SECURITY_PROTOCOL).",
    },
}
_SECURITY = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "an API key (`jobstream keys create`): `Authorization: Bearer <key>`"},
    "wsToken": {"type": "httpApiKey", "in": "query", "name": "token",
                "description": "a one-time token from `POST /ws-token`, for browsers"},
}  # fmt: skip


class StatusBatch(RootModel[list[StatusEvent]]):
    """A status record's value: a JSON array of status events, all of jobs whose id maps to
    the record's partition (`schemas.partition_for(job_id, partitions)`), each job's in
    order. Readers also take a lone event object."""

    root: list[StatusEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_RECORD)


def asyncapi_document(prefix: str = "jobstream") -> dict[str, Any]:
    """The document of the deployment whose topic names start with `prefix`. Pure."""
    topics = Topics(prefix)
    read: tuple[type[BaseModel], ...] = (JobEnvelope, StatusBatch, DeadLetter, *CLIENT_MESSAGES)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in read
    ]  # what's accepted
    models += [(m, "serialization") for m in SERVER_FRAMES]  # what the gateway sends
    _, defs = models_json_schema(models, ref_template=_SCHEMAS)
    channels: dict[str, Any] = {"ws": _websocket_channel()}
    for p in Priority:
        channels[f"jobs{p.value.title()}"] = _topic(topics.jobs(p), "job", f"{p.value}-priority jobs")
    channels["jobsRetry"] = _topic(topics.retry("{tier}"), "retryJob", "jobs waiting for a next attempt")
    tier = {"description": "a retry tier, named by its delay (JOBSTREAM_RETRY_TIERS)", "examples": _TIERS}
    channels["jobsRetry"]["parameters"] = {"tier": tier}
    channels["status"] = _topic(topics.status, "statusBatch", "every state change of every job")
    channels["dlq"] = _topic(topics.dlq, "deadLetter", "jobs given up on, and records that did not decode")
    return copy.deepcopy(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "jobstream",
                "version": f"{SCHEMA_VERSION.decode()}.0.0",
                "description": "A job pipeline on Apache Kafka: clients follow jobs on the gateway's "
                "WebSocket stream; programs may read the topics too. The major version is the "
                f"records' schema version (header `{HEADER_SCHEMA}`). Times are ms since the epoch.",
            },
            "defaultContentType": "application/json",
            "servers": _SERVERS,
            "channels": channels,
            "operations": _operations(channels),
            "components": {"schemas": defs["$defs"], "messages": _messages(), "securitySchemes": _SECURITY},
        }
    )


def _websocket_channel() -> dict[str, Any]:
    closes = "; ".join(f"{code}: {why}" for code, why in CLOSE_CODES.items())
    token = {"token": {"type": "string", "description": "a one-time token (`POST /ws-token`)"}}
    key = {"Authorization": {"type": "string", "description": "`Bearer <API key>`"}}
    return {
        "address": "/ws",
        "title": "The status stream",
        "description": "Send (un)subscribe messages as JSON text frames; the gateway answers each "
        "with `subscribed` (or `error`), then sends snapshots and events. Reconnect to any gateway "
        f"with the last `cursor` to miss nothing. Close codes: {closes}. A page from another "
        "site (its `Origin` not allowed) is refused with HTTP 403.",
        "servers": [{"$ref": "#/servers/gateway"}],
        "messages": {name: _ref(f"components/messages/{name}") for name in _WS_MESSAGES},
        "bindings": {
            "ws": {
                "method": "GET",
                "query": {"type": "object", "properties": token},
                "headers": {"type": "object", "properties": key},
                "bindingVersion": "0.1.0",
            }
        },
        "x-close-codes": {str(code): why for code, why in CLOSE_CODES.items()},
    }


def _topic(address: str, message: str, summary: str) -> dict[str, Any]:
    return {
        "address": address,
        "summary": summary,
        "servers": [{"$ref": "#/servers/kafka"}],
        "messages": {message: _ref(f"components/messages/{message}")},
        "bindings": {"kafka": {"topic": address, "bindingVersion": _KAFKA}},
    }


_WS_MESSAGES = ("subscribe", "unsubscribe", "subscribed", "snapshot", "events", "error")

# Per topic: who writes it (`send`) and who reads it (`receive`); `jobs` is each priority's.
_ROLES: dict[str, tuple[str, str]] = {
    "jobs": ("the API (`POST /jobs`), the scheduler (delayed jobs, schedules), workers (follow-ups) "
             "and dead-letter replays", "workers, highest priority first"),
    "jobsRetry": ("workers, after a failed attempt", "workers, once the record's due time has come"),
    "status": ("the API, the scheduler and workers, coalesced per partition", "gateways and the projector"),
    "dlq": ("workers and the scheduler", "the API's dead-letter index (`GET /dlq`)"),
}  # fmt: skip


def _operations(channels: dict[str, Any]) -> dict[str, Any]:
    receive = _operation("receive", "ws", ["subscribe", "unsubscribe"], "a client's message")
    replies = _messages_of("ws", ["subscribed", "error"])
    receive["reply"] = {"channel": _ref("channels/ws"), "messages": replies}
    frames = ["subscribed", "snapshot", "events", "error"]
    ops = {
        "receiveClientMessages": receive,
        "sendFrames": _operation("send", "ws", frames, "a client's frames"),
    }
    for name, channel in channels.items():
        if name != "ws":
            writers, readers = _ROLES.get(name, _ROLES["jobs"])
            title, messages = name[0].upper() + name[1:], list(channel["messages"])
            ops[f"send{title}"] = _operation("send", name, messages, f"written by {writers}")
            ops[f"receive{title}"] = _operation("receive", name, messages, f"read by {readers}")
    return ops


def _operation(action: str, channel: str, messages: list[str], summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": _ref(f"channels/{channel}"),
        "summary": summary,
        "messages": _messages_of(channel, messages),
    }


def _messages_of(channel: str, names: list[str]) -> list[dict[str, str]]:
    return [_ref(f"channels/{channel}/messages/{name}") for name in names]


def _ref(path: str) -> dict[str, str]:
    return {"$ref": f"#/{path}"}


def _messages() -> dict[str, Any]:
    cursor = encode_cursor({0: 1042, 1: 987})
    job = JobEnvelope(
        id="019ac4d2-5e3b-7c41-9a2f-6d1e8b3c7f20",
        type="images.resize",
        key="user-7",
        created_at=1764275520000,
    )
    event = events.job_event(job, JobState.active, 1764275520123, worker="host-1:4242", wait_ms=123)
    headers = {name: value.decode() for name, value in record_headers(job.type, job.attempt, None)}
    subscribe = {"subscribe": {"jobs": [job.id], "types": [job.type], "cursor": cursor}}
    messages = {
        "subscribe": _ws("SubscribeMessage", subscribe),
        "unsubscribe": _ws("UnsubscribeMessage", {"unsubscribe": {"types": [job.type]}}),
        "subscribed": _ws("SubscribedFrame", orjson.loads(subscribed_frame(1, {job.type}, False, cursor))),
        "snapshot": _ws("SnapshotFrame"),
        "events": _ws("EventsFrame", orjson.loads(events_frame([event], cursor))),
        "error": _ws("ErrorFrame", orjson.loads(error_frame("cursor is truncated", ErrorCode.bad_cursor))),
        "job": _record(
            "JobEnvelope",
            "a job: its envelope as JSON (writers leave defaults out)",
            _job_headers(required=True),
            _JOB_KEY,
            {"payload": orjson.loads(encode_job(job)), "headers": headers},
        ),
        "retryJob": _record(
            "JobEnvelope",
            "the next attempt of a failed job: `attempt` counts it, `errors` holds the earlier ones'",
            _job_headers(required=True, due=True),
            _JOB_KEY,
        ),
        "statusBatch": _record(
            "StatusBatch",
            "status events, coalesced; records have no key and no headers: a job's events all go "
            "to partition `crc32(job_id) % partitions`, in order",
            example={"payload": [event]},
        ),
        "deadLetter": _record(
            "DeadLetter",
            "a job given up on (`reason`) with its last envelope and every attempt's error, and a "
            "job record's headers when a worker wrote it; a record that did not decode (`poison`) "
            "carries its bytes in `raw`",
            _job_headers(required=False),
            {"type": "string", "description": "the job's record key, or the dead letter's id without a job"},
        ),
    }
    return {name: {"name": name, **message} for name, message in messages.items()}


_JOB_KEY = {
    "type": "string",
    "description": "the job's `key` when it has one, else its `id`. The partition is "
    "`crc32(key) % partitions` (`schemas.partition_for`), the same on every job topic, so a "
    "key's jobs keep their order",
}


def _ws(model: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    """A WebSocket message: its model's docstring says what it is."""
    found = next(m for m in (*CLIENT_MESSAGES, *SERVER_FRAMES) if m.__name__ == model)
    summary = " ".join((found.__doc__ or "").split("\n\n")[0].split())
    return _record(model, summary, example=None if example is None else {"payload": example})


def _record(
    model: str,
    summary: str,
    headers: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": model,
        "summary": summary,
        "payload": _ref(f"components/schemas/{model}"),
    }
    if headers is not None:
        message["headers"] = headers
    if key is not None:
        message["bindings"] = {"kafka": {"key": key, "bindingVersion": _KAFKA}}
    if example is not None:
        message["examples"] = [example]
    return message


def _job_headers(required: bool, due: bool = False) -> dict[str, Any]:
    """The headers of a job record (`schemas.record_headers`), each UTF-8 text."""
    text = {"type": "string"}
    properties = {
        HEADER_SCHEMA: {**text, "const": SCHEMA_VERSION.decode(), "description": "the schema version"},
        HEADER_TYPE: {**text, "pattern": TYPE_PATTERN, "description": "the job's type"},
        HEADER_ATTEMPT: {**text, "pattern": "^[1-9][0-9]*$", "description": "the attempt, in decimal"},
        HEADER_TRACEPARENT: {**text, "description": "W3C trace context, when the client sent one"},
    }
    names = [HEADER_SCHEMA, HEADER_TYPE, HEADER_ATTEMPT]
    if due:
        properties[HEADER_DUE] = {**text, "pattern": "^[0-9]+$", "description": "when it is due, in ms"}
        names.append(HEADER_DUE)
    return {"type": "object", "properties": properties} | ({"required": names} if required else {})


def main(argv: list[str] | None = None) -> None:
    """`python -m gateway.asyncapi [--prefix P] > docs/asyncapi.json`."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.asyncapi", description="print the AsyncAPI document (JSON)"
    )
    parser.add_argument("--prefix", default="jobstream", help="the topic prefix (JOBSTREAM_TOPIC_PREFIX)")
    sys.stdout.write(json.dumps(asyncapi_document(parser.parse_args(argv).prefix), indent=2) + "\n")


if __name__ == "__main__":
    main()
