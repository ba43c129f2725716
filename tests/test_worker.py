"""The worker runtime against the real broker and Redis, in-process."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer import JobContext, Worker, WorkerApp
from consumer.examples import app
from jobstream.settings import Settings, WorkerSettings
from schemas import Priority
from tests.helpers import StatusLog, eventually, make_job, produce_jobs


def worker_settings(settings: Settings, **kw: object) -> WorkerSettings:
    return WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000, **kw})


async def test_jobs_complete_and_report_each_state(settings: Settings) -> None:
    """Every job goes active (saying how long it waited since it was made) then completed,
    with the handler's result."""
    jobs = [make_job("example.echo", {"i": i}, priority=Priority(p)) for i, p in
            enumerate(["high", "normal", "low"] * 20)]  # fmt: skip
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings)):
        await produce_jobs(settings, jobs)
        await status.wait_for(lambda: status.count("completed") == len(jobs), 30, "all jobs completed")
        for job in jobs:
            assert status.states(job.id) == ["active", "completed"]
            assert status.events[job.id][-1]["result"] == {"i": job.payload["i"]}
            active = status.events[job.id][0]
            assert 0 <= active["wait_ms"] <= active["at"] - job.created_at


async def test_failures_timeouts_unknown_types_and_poison_do_not_stop_the_worker(settings: Settings) -> None:
    """A raising handler, a timeout, an unknown type and a poison record each end dead; the rest run."""
    failing = make_job("example.fail", max_attempts=1)
    slow = make_job("example.sleep", {"ms": 5000}, timeout_s=0.2, max_attempts=1)
    unknown = make_job("no.such.type")
    good = [make_job("example.echo", {"i": i}) for i in range(10)]
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings)):
        await produce_jobs(settings, [failing, slow, unknown, *good], raw=[b"\x00not json"])
        await status.wait_for(
            lambda: status.count("completed") == 10 and status.count("dead") == 3, 30, "outcomes"
        )
    assert status.states(failing.id) == ["active", "failed", "dead"]
    assert status.events[failing.id][-1]["error"]["type"] == "RuntimeError"
    assert status.events[failing.id][-1]["reason"] == "exhausted"
    assert status.events[slow.id][-1]["error"]["type"] == "JobTimeout"
    assert status.events[slow.id][-1]["reason"] == "timeout"
    assert status.events[unknown.id][-1]["reason"] == "unknown_type"


async def test_progress_events_arrive_in_order(settings: Settings) -> None:
    """example.progress reports each step, in order, before it completes."""
    job = make_job("example.progress", {"steps": 5, "ms": 10})
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings)):
        await produce_jobs(settings, [job])
        await status.wait_for(lambda: "completed" in status.states(job.id), 30, "completion")
    events = status.events[job.id]
    percents = [e["progress"]["percent"] for e in events if e["state"] == "progress"]
    assert percents == [20.0, 40.0, 60.0, 80.0, 100.0]
    assert status.states(job.id) == ["active"] + ["progress"] * 5 + ["completed"]


async def test_concurrency_is_bounded(settings: Settings) -> None:
    """No more than `concurrency` handlers run at once."""
    jobs = [make_job("example.sleep", {"ms": 50}) for _ in range(40)]
    ws = worker_settings(settings, concurrency=4)
    async with StatusLog(settings) as status, Worker(app, ws):
        await produce_jobs(settings, jobs)
        await status.wait_for(lambda: status.count("completed") == 40, 60, "completion")
    # replay the events in time order and count how many were active at once
    timeline = sorted(
        (e["at"], 0 if e["state"] == "completed" else 1) for evs in status.events.values() for e in evs
    )
    running = peak = 0
    for _, starts in timeline:
        running += 1 if starts else -1
        peak = max(peak, running)
    assert peak <= 4


ordered_app = WorkerApp("ordered")


@ordered_app.handler("ledger.apply", ordered=True)
async def apply_entry(ctx: JobContext) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"n": ctx.payload["n"]}


async def test_ordered_type_runs_same_key_records_one_at_a_time_in_order(settings: Settings) -> None:
    """Records of an ordered type sharing a key start only after the previous one completed, in order."""
    jobs = [make_job("ledger.apply", {"n": n}, key="account-7") for n in range(15)]
    async with StatusLog(settings) as status, Worker(ordered_app, worker_settings(settings, concurrency=8)):
        await produce_jobs(settings, jobs)
        await status.wait_for(lambda: status.count("completed") == len(jobs), 30, "every entry")
    for before, after in itertools.pairwise(jobs):
        done = status.events[before.id][-1]
        started = status.events[after.id][0]
        assert (done["state"], started["state"]) == ("completed", "active")
        assert started["at"] >= done["at"], (
            f"entry {after.payload['n']} started before {before.payload['n']} ended"
        )


async def test_copies_of_a_scheduled_job_fetched_together_run_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler that died after producing a job and before releasing it fires it again:
    two records of one job (one id, `not_before` set), written before the worker starts so
    that its first fetch takes both and both pass the completed-id check. The copy waits
    behind the first and, once that ended, is not run."""
    job = make_job("example.sleep", {"ms": 500}, not_before=int(time.time() * 1000))
    caplog.set_level(logging.INFO, logger="jobstream.worker")
    async with StatusLog(settings) as status:
        await produce_jobs(settings, [job, job])
        async with Worker(app, worker_settings(settings)) as worker:
            await status.wait_for(lambda: "completed" in status.states(job.id), 30, "the job")
            outcomes = worker.metrics.outcomes
            await eventually(  # the copy is handed back as the first ends
                lambda: (
                    outcomes.get(("example.sleep", "skipped")) == 1
                    or status.states(job.id).count("active") > 1
                ),
                "the copy to be skipped (or run)",
            )
    assert status.states(job.id) == ["active", "completed"], "the copy ran"
    assert "a copy waited while it ran; not run again" in caplog.text  # not the completed-id check


async def test_buffered_high_starts_before_low(settings: Settings) -> None:
    """With the only slot busy, buffered high records start before low ones fetched earlier."""
    blocker = make_job("example.sleep", {"ms": 1_000})
    low = [make_job("example.echo", {"i": i}, priority=Priority.low) for i in range(5)]
    high = [make_job("example.echo", {"i": i}, priority=Priority.high) for i in range(5)]
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings, concurrency=1)):
        await produce_jobs(settings, [blocker])
        await status.wait_for(lambda: "active" in status.states(blocker.id), 30, "the blocker to start")
        await produce_jobs(settings, low)
        await produce_jobs(settings, high)
        await status.wait_for(lambda: status.count("completed") == 11, 30, "every job")
    started = sorted((status.events[j.id][0]["at"], j.priority.value) for j in low + high)
    assert [p for _, p in started] == ["high"] * 5 + ["low"] * 5


async def test_metrics_count_outcomes_per_type_with_run_times(settings: Settings) -> None:
    """`/metrics` on the worker's own port counts outcomes per type (poison too), has run-time
    and queue-wait histograms and gauges, and stops being served when the worker stops."""
    jobs = [make_job("example.echo", {"i": i}) for i in range(5)] + [make_job("example.fail", max_attempts=1)]
    want = {("example.echo", "completed"): 5.0, ("example.fail", "failed"): 1.0, ("", "poison"): 1.0}
    async with Worker(app, worker_settings(settings, metrics_port=0)) as worker, httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        await produce_jobs(settings, jobs, raw=[b"\x00not json"])
        async with asyncio.timeout(30):
            while True:
                r = await http.get(url)
                assert r.status_code == 200
                families = {f.name: f for f in text_string_to_metric_families(r.text)}
                jobs_seen = {
                    (s.labels["type"], s.labels["outcome"]): s.value
                    for s in families["jobstream_worker_jobs"].samples
                    if s.name.endswith("_total")
                }
                if jobs_seen == want:
                    break
                await asyncio.sleep(0.1)
        runs = {s.labels.get("le"): s.value for s in families["jobstream_worker_run_seconds"].samples
                if s.name.endswith("_bucket") and s.labels["type"] == "example.echo"}  # fmt: skip
        assert runs["+Inf"] == 5.0
        waits = {s.labels.get("le"): s.value for s in families["jobstream_worker_queue_wait_seconds"].samples
                 if s.name.endswith("_bucket") and s.labels["type"] == "example.echo"}  # fmt: skip
        assert waits["+Inf"] == 5.0  # each echo job once, from its `created_at`
        assert waits["1800.0"] == 5.0 and waits["0.001"] <= 5.0
        gauges = {
            f: families[f"jobstream_worker_{f}"].samples[0].value
            for f in ("concurrency", "assigned_partitions")
        }
        assert gauges["concurrency"] == worker.settings.concurrency
        assert (
            gauges["assigned_partitions"]
            == len(settings.topics.job_topics + tuple(settings.retry_tier_names)) * settings.partitions
        )
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


async def test_metrics_label_made_up_types_unknown(settings: Settings) -> None:
    """Jobs of types with no handler count under one `unknown` type label, so made-up types
    add no series to `/metrics`, however many there are."""
    made_up = [make_job(f"made.up.{i}", max_attempts=1) for i in range(300)]
    known = make_job("example.echo")
    async with (
        StatusLog(settings) as status,
        Worker(app, worker_settings(settings, metrics_port=0)) as worker,
        httpx.AsyncClient() as http,
    ):
        await produce_jobs(settings, [*made_up, known])
        await status.wait_for(
            lambda: status.count("dead") == len(made_up) and status.count("completed") == 1, 30, "outcomes"
        )
        r = await http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    jobs_seen = {
        (s.labels["type"], s.labels["outcome"]): s.value
        for s in families["jobstream_worker_jobs"].samples
        if s.name.endswith("_total")
    }
    assert jobs_seen == {("unknown", "failed"): len(made_up), ("example.echo", "completed"): 1.0}
    assert "made.up" not in r.text
    assert len(r.content) < 20_000
