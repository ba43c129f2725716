"""W3C `traceparent`: parsed from the submit request, carried on every record of the job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from consumer import JobContext, Worker, WorkerApp
from jobstream.settings import ApiSettings, Settings, WorkerSettings
from producer import create_app
from schemas import (
    HEADER_TRACEPARENT,
    Priority,
    child_job_id,
    decode_dead_letter,
    decode_job,
    parse_traceparent,
)
from tests.helpers import StatusLog, asgi_client, read_topic

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (TP, TP),
        (TP.upper(), TP),  # case is normalised
        (f"  {TP} ", TP),
        (None, None),
        ("", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),  # no flags
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # forbidden version
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # zero parent id
        ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", None),  # not hex
    ],
)
def test_traceparent_parsing_ignores_what_the_spec_says_to_ignore(
    header: str | None, parsed: str | None
) -> None:
    assert parse_traceparent(header) == parsed


def _traceparent(record: Any) -> str | None:
    values = [v.decode() for k, v in record.headers if k == HEADER_TRACEPARENT]
    return values[0] if values else None


seen: dict[str, str | None] = {}
app = WorkerApp()


@app.handler("trace.flaky", max_attempts=2)
async def flaky(ctx: JobContext) -> None:
    seen[f"{ctx.id}:{ctx.attempt}"] = ctx.traceparent
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")


@app.handler("trace.child")
async def child(ctx: JobContext) -> None:
    seen[ctx.id] = ctx.traceparent


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    worker = WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000})
    api = create_app(ApiSettings(**settings.model_dump()))
    async with Worker(app, worker), asgi_client(api) as client:
        yield client


async def test_traceparent_follows_the_job_through_retry_follow_up_and_delay(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """The header reaches the job record, its retry, its follow-up and a delayed job's record,
    and handlers read it; an invalid header is ignored and the submit still succeeds."""
    spec = {"type": "trace.flaky", "then": [{"type": "trace.child"}], "backoff": {"base_ms": 1, "jitter": 0}}
    async with StatusLog(settings) as status:
        r = await http.post("/jobs", json=spec, headers={"traceparent": TP})
        assert r.status_code == 202, r.text
        parent = r.json()["id"]
        kid = child_job_id(parent, 0)
        r = await http.post("/jobs/batch", json={"jobs": [{"type": "trace.child", "delay_ms": 50}]},
                            headers={"traceparent": TP})  # fmt: skip
        delayed = r.json()["results"][0]["id"]
        r = await http.post(
            "/jobs", json={"type": "trace.flaky", "max_attempts": 1}, headers={"traceparent": TP}
        )
        dead = r.json()["id"]
        r = await http.post("/jobs", json={"type": "trace.child"}, headers={"traceparent": "garbage"})
        assert r.status_code == 202, r.text
        untraced = r.json()["id"]
        done = (kid, delayed, untraced)
        await status.wait_for(lambda: all("completed" in status.states(j) for j in done), 30, "every job")
        await status.wait_for(lambda: "dead" in status.states(dead), 30, "the job that fails for good")

    assert seen == {
        f"{parent}:1": TP,
        f"{parent}:2": TP,
        kid: TP,
        delayed: TP,
        untraced: None,
        f"{dead}:1": TP,
    }
    records = await read_topic(settings, settings.topics.jobs(Priority.normal), 5)
    by_id = {decode_job(r.value).id: _traceparent(r) for r in records}
    assert by_id == {parent: TP, kid: TP, delayed: TP, untraced: None, dead: TP}
    letters = await read_topic(settings, settings.topics.dlq, 1)
    assert [(decode_dead_letter(r.value).id, _traceparent(r)) for r in letters] == [(dead, TP)]
    retries = await read_topic(settings, settings.topics.retry(settings.retry_tier_names[0]), 1)
    assert [(decode_job(r.value).id, _traceparent(r)) for r in retries] == [(parent, TP)]
