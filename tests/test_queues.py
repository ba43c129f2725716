"""`GET /queues`: depths of the priority topics and retry tiers, delayed and dead counts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx

from consumer import Worker
from consumer.examples import app as examples
from jobstream.cli import procs
from jobstream.cli.stack import RedisServer
from jobstream.settings import ApiSettings, Settings, WorkerSettings
from producer import create_app
from schemas import Priority
from tests.helpers import asgi_client


async def queues_until(
    http: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 60
) -> dict[str, Any]:
    """GET /queues until `check` holds for the answer (answers are cached for a second)."""
    body: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                r = await http.get("/queues")
                assert r.status_code == 200, r.text
                body = r.json()
                if check(body):
                    return body
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last answer {body}") from None


def depths(body: dict[str, Any]) -> dict[str, int]:
    return {q["name"]: q["depth"] for q in body["queues"]}


async def test_queues_report_depth_delayed_and_dead_then_drain(settings: Settings) -> None:
    """Jobs nobody ran yet count as depth per priority, delayed jobs as waiting; once a
    worker runs them the depths fall to zero, except the retry waiting in the 1h tier, and
    the job that failed for good counts as dead."""
    api = create_app(ApiSettings(**settings.model_dump()))
    async with asgi_client(api) as http:
        jobs: list[dict[str, Any]] = [{"type": "example.noop", "priority": "high"}] * 3 + [
            {"type": "example.noop"}
        ] * 7
        jobs += [{"type": "example.fail", "priority": "low", "max_attempts": 1}]
        jobs += [{"type": "example.noop", "delay_ms": 3_600_000}] * 2
        hour = {"kind": "fixed", "base_ms": 3_600_000, "jitter": 0}  # its retry waits in the 1h tier
        jobs += [{"type": "example.fail", "max_attempts": 2, "backoff": hour}]
        r = await http.post("/jobs/batch", json={"jobs": jobs})
        assert r.status_code == 200 and all("error" not in row for row in r.json()["results"]), r.text

        body = await queues_until(http, lambda b: depths(b)["normal"] == 8, "the submitted jobs")
        assert depths(body) == {"high": 3, "normal": 8, "low": 1, **{t: 0 for t in settings.retry_tier_names}}
        assert body["delayed"] == {"waiting": 2, "claimed": 0}
        assert body["dead_letters"] == {"indexed": 0, "on_topic": 0}
        assert body["group"] == settings.topics.workers_group
        topics = settings.topics
        expected = [topics.jobs(p) for p in Priority.ordered()] + [
            topics.retry(t) for t in settings.retry_tier_names
        ]
        assert [q["topic"] for q in body["queues"]] == expected
        assert [q["kind"] for q in body["queues"]] == ["priority"] * 3 + ["retry"] * len(
            settings.retry_tier_names
        )

        worker = WorkerSettings(**{**settings.model_dump(), "commit_interval_ms": 200})
        async with Worker(examples, worker):
            body = await queues_until(
                http,
                lambda b: (
                    depths(b) == {**dict.fromkeys(depths(b), 0), "1h": 1}
                    and b["dead_letters"]["indexed"] == 1
                ),
                "the worker to drain every queue but the 1h tier, and the failed job to be indexed as dead",
            )
        assert body["dead_letters"] == {"indexed": 1, "on_topic": 1}
        assert body["delayed"] == {"waiting": 2, "claimed": 0}  # due in an hour: untouched
        assert all(q["end_offset"] >= 0 for q in body["queues"])
        assert sum(q["end_offset"] for q in body["queues"] if q["kind"] == "priority") == 12


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobstream.cli", "queues", *args], capture_output=True, text=True, timeout=60
    )


def test_queues_command_prints_a_table(api_url: str, settings: Settings) -> None:
    """`jobstream queues` prints every queue with its depth, then delayed and dead counts."""
    out = run_cli("--api", api_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["queue", "kind", "depth", "end", "offset", "topic"]
    names = [p.value for p in Priority.ordered()] + settings.retry_tier_names
    assert [line.split()[0] for line in lines[1 : 1 + len(names)]] == names
    assert all(line.split()[2] == "0" for line in lines[1 : 1 + len(names)])
    assert "delayed: 0 waiting, 0 claimed by a scheduler" in out.stdout
    assert "dead letters: 0 indexed (GET /dlq), 0 on the topic" in out.stdout


def test_queues_command_says_when_the_api_is_down() -> None:
    out = run_cli("--api", f"http://127.0.0.1:{procs.free_port()}")
    assert out.returncode == 2
    assert "is the API running?" in out.stderr


async def test_queues_answer_503_naming_redis_when_it_is_down(
    settings: Settings, private_redis: RedisServer
) -> None:
    """With Redis unreachable, GET /queues is a 503 with Retry-After naming redis, not a 500."""
    app = create_app(ApiSettings(**{**settings.model_dump(), "redis_url": private_redis.url}))
    async with asgi_client(app) as http:
        private_redis.stop()
        r = await http.get("/queues")
        assert r.status_code == 503, r.text
        assert r.json()["service"] == "redis" and "Retry-After" in r.headers
