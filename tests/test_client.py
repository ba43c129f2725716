"""The Python client (`jobstream.Client`, `SyncClient`) against an API, a gateway and a worker,
each its own process, on the real broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobstream import Client, SyncClient
from jobstream.cli import procs
from jobstream.cli.stack import KafkaBroker
from jobstream.client import InvalidInput, JobCancelled, JobExpired, JobFailed, Unauthorized, Unavailable
from jobstream.kafka import ensure_topics
from jobstream.settings import Settings
from schemas import Priority, decode_job
from tests.conftest import ROOT, Services
from tests.helpers import read_topic, wait_until
from tests.pipeline import run_pipeline, spawn_service
from tests.test_dashboard import Deployment, deployment

WAIT_S = 30.0


@pytest.fixture
def stack(env: dict[str, str], settings: Settings, tmp_path: Path) -> Iterator[Deployment]:
    """API, gateway and a worker of `tests.dashboard_app` (`dash.echo`, `dash.fail`)."""
    with deployment(env, tmp_path) as d:
        yield d


def ws(d: Deployment) -> str:
    return d.gateway.replace("http://", "ws://") + "/ws"


async def test_submit_and_await_each_ending(stack: Deployment) -> None:
    """A result, a failure with its traceback, an expiry, a cancel and a timeout, each as the
    exception or value the caller expects."""
    async with Client(stack.api, ws(stack)) as client:
        job = await client.submit("dash.echo", {"w": 64}, priority="high")
        assert await job.result(timeout=WAIT_S) == {"w": 64}

        failing = await client.submit("dash.fail", {})
        with pytest.raises(JobFailed) as failed:
            await failing.result(timeout=WAIT_S)
        assert (failed.value.error_type, failed.value.message) == ("RuntimeError", "broken on purpose")
        assert failed.value.traceback and "dashboard_app.py" in failed.value.traceback
        assert failed.value.attempt == 1 and failed.value.reason == "exhausted"

        expiring = await client.submit("dash.echo", {}, delay=0.2, ttl_ms=1)
        with pytest.raises(JobExpired):
            await expiring.result(timeout=WAIT_S)

        later = await client.submit("dash.echo", {}, delay=dt.timedelta(hours=1))
        assert later.state == "scheduled" and later.run_at
        with pytest.raises(TimeoutError):
            await later.result(timeout=0.5)
        assert await later.cancel() == "cancelled"
        with pytest.raises(JobCancelled):
            await later.result(timeout=WAIT_S)
        assert (await later.status())["state"] == "cancelled"

        with pytest.raises(InvalidInput) as refused:
            await client.submit("dash.echo", {}, max_attempts=0)
        assert refused.value.field == "max_attempts" and "max_attempts" in refused.value.detail


async def test_a_thousand_results_awaited_at_once_share_one_connection(stack: Deployment) -> None:
    """1,000 jobs submitted in one batch, their results awaited concurrently: all arrive."""
    async with Client(stack.api, ws(stack)) as client:
        jobs = await client.submit_many([{"type": "dash.echo", "payload": {"i": i}} for i in range(1_000)])
        results = await asyncio.gather(*(j.result(timeout=60) for j in jobs if not isinstance(j, Exception)))
    assert results == [{"i": i} for i in range(1_000)]


async def test_results_awaited_one_after_another_stay_within_the_gateways_message_limit(
    stack: Deployment,
) -> None:
    """150 jobs submitted and awaited one at a time (a subscribe each, unsubscribes later):
    the watcher paces its messages, so the gateway never closes it for flooding."""
    async with Client(stack.api, ws(stack)) as client:
        for i in range(150):
            assert await (await client.submit("dash.echo", {"i": i})).result(timeout=WAIT_S) == {"i": i}
    async with aiohttp.ClientSession() as http, http.get(f"{stack.gateway}/metrics") as resp:
        metrics = await resp.text()
    flooding = [
        ln for ln in metrics.splitlines() if ln.startswith("jobstream_gateway_flooding_clients_closed_total")
    ]
    assert flooding and float(flooding[0].split()[-1]) == 0, flooding


async def test_events_continue_across_a_gateway_restart(stack: Deployment) -> None:
    """`client.events()` reconnects from its last cursor when the gateway restarts: every job's
    events arrive, none missed, none twice."""
    async with Client(stack.api, ws(stack)) as client:
        seen: list[tuple[str, str, int]] = []
        done: set[str] = set()
        ids: set[str] = set()
        started, finished = asyncio.Event(), asyncio.Event()

        async def follow() -> None:
            async for event in client.events(types=["dash.echo"]):
                seen.append((event.job_id, event.state.value, event.attempt))
                if event.state.value == "completed":
                    done.add(event.job_id)
                    if len(ids) == 40 and ids <= done:
                        finished.set()
                started.set()

        follower = asyncio.create_task(follow())
        async with asyncio.timeout(WAIT_S):  # a job seen says the feed is live: all after it is seen
            while not started.is_set():
                await client.submit("dash.echo", {"warm": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(started.wait(), 1)
        first = [await client.submit("dash.echo", {"i": i}) for i in range(20)]
        await asyncio.to_thread(stack.restart_gateway)
        second = [await client.submit("dash.echo", {"i": i}) for i in range(20)]
        ids.update(j.id for j in first + second)
        if ids <= done:
            finished.set()
        try:
            await asyncio.wait_for(finished.wait(), 60)
        except TimeoutError:
            early = {j.id for j in first}  # submitted before the restart
            missing = [(j in early, [x[1] for x in seen if x[0] == j]) for j in ids - done]
            raise AssertionError(
                f"not seen completed (before the restart?, states seen): {missing}"
            ) from None
        follower.cancel()
    repeated = [e for e, n in Counter(seen).items() if n > 1]
    assert not repeated, f"events delivered twice: {repeated[:5]}"
    for job_id in ids:
        assert [s for j, s, _ in seen if j == job_id] == ["queued", "active", "completed"], job_id


def test_the_blocking_client(stack: Deployment) -> None:
    """`SyncClient`: the same calls, blocking, from a program without an event loop."""
    with SyncClient(stack.api, ws(stack)) as client:
        job = client.submit("dash.echo", {"sync": True})
        assert job.result(timeout=WAIT_S) == {"sync": True}
        assert client.status(job.id)["id"] == job.id  # its state there may trail the feed a moment
        states = [e.state.value for e in client.submit("dash.echo", {}).events()]
        assert states[-1] == "completed"
        followed = list(client.job(job.id).events())  # followed after it ended: where it stands first
        assert getattr(followed[0], "snapshot", False) and followed[-1].state.value == "completed"
        with pytest.raises(JobFailed):
            client.submit("dash.fail", {}).result(timeout=WAIT_S)


async def test_submits_through_a_kafka_outage_enqueue_each_job_once(
    private_kafka: KafkaBroker, services: Services, prefix: str, tmp_path: Path
) -> None:
    """Kafka stopped for a few seconds while 200 submits run with a 60 s deadline: every call
    returns one job (or raises), and no job is enqueued twice."""
    settings = Settings(kafka_bootstrap_servers=private_kafka.bootstrap, redis_url=services.redis_url,
                        topic_prefix=prefix, partitions=6, status_partitions=3)  # fmt: skip
    await ensure_topics(settings)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": private_kafka.bootstrap, "REDIS_URL": services.redis_url,
           "JOBSTREAM_TOPIC_PREFIX": prefix, "JOBSTREAM_PARTITIONS": "6", "JOBSTREAM_STATUS_PARTITIONS": "3",
           "JOBSTREAM_SUBMIT_TIMEOUT_S": "2"}  # fmt: skip
    api = spawn_service("api", env, tmp_path / "api.log")
    try:
        await asyncio.to_thread(api.wait_ready)
        url = f"http://127.0.0.1:{api.port}"
        async with Client(url, retry_for=60) as client:
            await client.submit("example.echo")  # warm

            async def one(i: int) -> str | BaseException:
                await asyncio.sleep(i * 0.03)
                try:
                    return (await client.submit("example.echo", {"i": i})).id
                except (Unavailable, OSError) as exc:
                    return exc

            calls = asyncio.gather(*(one(i) for i in range(200)))
            await asyncio.sleep(1)
            await asyncio.to_thread(private_kafka.stop)
            await asyncio.sleep(3)
            await asyncio.to_thread(private_kafka.start)
            answers = await calls
            async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
                metrics = await resp.text()
    finally:
        procs.stop(api.proc, grace_s=30)
    refused = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith("jobstream_api_submit_rejected_total") and "kafka" in ln
    ]
    assert refused and float(refused[0].split()[-1]) > 0, "the outage answered no 503: nothing was retried"
    ids = [a for a in answers if isinstance(a, str)]
    assert len(ids) == len(set(ids)) and len(ids) >= 150, answers
    records = await read_topic(settings, settings.topics.jobs(Priority.normal), 1 + len(ids), timeout_s=60)
    jobs = [decode_job(r.value) for r in records]
    per_key = Counter(j.idempotency_key for j in jobs)
    assert not [k for k, n in per_key.items() if n > 1], "a submit was enqueued twice"
    assert {j.id for j in jobs} >= set(ids)
    print(f"\n{len(ids)} of 200 submits returned a job; {len(answers) - len(ids)} raised;"
          f" {len(jobs)} records", file=sys.stderr)  # fmt: skip


def test_the_command_line_submits_through_the_client(stack: Deployment, env: dict[str, str]) -> None:
    """`jobstream submit --wait` (its HTTP through `jobstream.client`) prints the id and each
    state until the end: exit 0 for a result, 1 for a job that ends dead."""

    def submit(*args: str) -> subprocess.CompletedProcess[str]:
        where = ["--api", stack.api, "--gateway", ws(stack)]
        cmd = [sys.executable, "-m", "jobstream.cli", "submit", *args, *where, "--wait", "--timeout", "30"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    done = submit("dash.echo", '{"n": 1}')
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines[0]) == 36 and "completed" in lines[-1] and 'result {"n": 1}' in lines[-1], done.stdout
    dead = submit("dash.fail", "{}")
    assert dead.returncode == 1 and "RuntimeError: broken on purpose" in dead.stdout, (
        dead.stdout + dead.stderr
    )


def test_the_example_script_runs_against_the_pipeline(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """`examples/client.py`, as the README tells one to run it, against API, gateway and workers."""
    with run_pipeline(env, tmp_path, workers=1) as p:
        cmd = [sys.executable, str(ROOT / "examples" / "client.py"), "--api", p.api, "--gateway", p.ws]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "echo:" in out and "{'hello': 'world'}" in out, out
    assert "progress job: completed" in out and "failed: RuntimeError on purpose" in out, out
    assert "batch: 100 results, the last {'i': 99}" in out, out


async def test_with_keys_required_and_dead_letters(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """With keys required the client's key goes with every request and connection (none:
    `Unauthorized`); a dead job's dead letter is listed, shown with its traceback, counted
    by a dry run and replayed."""
    with deployment(env, tmp_path, auth=True) as d:
        async with Client(d.api, ws(d), api_key="js_000000000000_wrong") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.submit("dash.echo")
        async with Client(d.api, ws(d), api_key=d.key) as client:
            assert await (await client.submit("dash.echo", {"k": 1})).result(timeout=WAIT_S) == {"k": 1}
            dead = await client.submit("dash.until_fixed", {})
            with pytest.raises(JobFailed):
                await dead.result(timeout=WAIT_S)

            async def listed() -> list[dict[str, Any]]:
                return list((await client.dead_letters(type="dash.until_fixed"))["items"])

            await wait_until(listed, 1, "the dead letter to be indexed")
            [letter] = await listed()
            shown = await client.dead_letter(letter["id"])
            assert "not fixed yet" in shown["errors"][-1]["traceback"]
            assert (await client.replay(types=["dash.until_fixed"]))["matched"] == 1
            d.fixed.touch()
            started = await client.replay(types=["dash.until_fixed"], dry_run=False)
            assert started["matched"] == 1

            async def replayed() -> list[dict[str, Any]]:
                status = await client.replay_status(started["replay_id"])
                return [status] if status["state"] != "running" else []

            await wait_until(replayed, 1, "the replay to finish")
            assert (await replayed())[0]["replayed"] == 1
