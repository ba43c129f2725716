"""Worker processes in one group: sharing partitions, SIGTERM drain, SIGKILL recovery."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer.donestore import DoneStore
from jobstream.cli import procs
from jobstream.settings import Settings
from schemas import JobSpec, child_job_id
from tests.helpers import StatusLog, make_job, produce_jobs, wait_until
from tests.journal_app import Journal

pytestmark = pytest.mark.slow

CONCURRENCY = 8
KILL_CONCURRENCY = 32  # the default: a busy worker, whose double-run window is widest
KILL_JOBS = 5_000
JOURNAL = "JOBSTREAM_TEST_JOURNAL"


def start_worker(
    env: dict[str, str], log: Path, concurrency: int = CONCURRENCY, app: str = "consumer.examples:app"
) -> subprocess.Popen[bytes]:
    return procs.spawn(
        [sys.executable, "-m", "jobstream.cli", "worker", app, "--concurrency", str(concurrency)],
        env={**env, "JOBSTREAM_SESSION_TIMEOUT_MS": "3000", "JOBSTREAM_DRAIN_TIMEOUT_S": "20"},
        log=log,
    )


def completions(status: StatusLog) -> Counter[str]:
    return Counter(j for j, evs in status.events.items() for e in evs if e["state"] == "completed")


def runs(status: StatusLog) -> Counter[str]:
    return Counter(j for j, evs in status.events.items() for e in evs if e["state"] == "active")


def distinct_completions(status: StatusLog) -> Counter[str]:
    """Completed events per job, told apart by (worker, at): an event sent again counts once."""
    seen = {
        (j, e["worker"], e["at"])
        for j, evs in status.events.items()
        for e in evs
        if e["state"] == "completed"
    }
    return Counter(j for j, _, _ in seen)


def workers_seen(status: StatusLog) -> set[str]:
    return {e["worker"] for evs in status.events.values() for e in evs if e["state"] == "completed"}


async def test_sigterm_mid_run_completes_every_job_exactly_once(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """Stopping one of two workers with SIGTERM mid-run: every job runs and completes once."""
    jobs = [make_job("example.sleep", {"ms": 100}) for _ in range(300)]
    a = start_worker(env, tmp_path / "a.log")
    b = start_worker(env, tmp_path / "b.log")
    try:
        async with StatusLog(settings) as status:
            await produce_jobs(settings, jobs)
            await status.wait_for(lambda: len(workers_seen(status)) == 2, 60, "both workers to complete jobs")
            a.send_signal(signal.SIGTERM)
            assert a.wait(40) == 0, procs.tail(tmp_path / "a.log")
            await status.wait_for(lambda: len(completions(status)) == len(jobs), 90, "every job to complete")
            assert b.poll() is None, "the surviving worker died:\n" + procs.tail(tmp_path / "b.log")
            assert max(completions(status).values()) == 1
            assert max(runs(status).values()) == 1, "a job ran twice"
    finally:
        procs.stop(a)
        procs.stop(b)


async def test_sigkill_mid_run_loses_nothing_and_bounds_double_runs(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL one of two busy workers: every job completes once; at most 3 x concurrency start twice."""
    for name in "ab":
        (tmp_path / name).mkdir()
    jobs = [make_job("journal.sleep", {"ms": 20}) for _ in range(KILL_JOBS)]
    app = "tests.journal_app:app"
    a = start_worker({**env, JOURNAL: str(tmp_path / "a")}, tmp_path / "a.log", KILL_CONCURRENCY, app)
    b = start_worker({**env, JOURNAL: str(tmp_path / "b")}, tmp_path / "b.log", KILL_CONCURRENCY, app)
    try:
        async with StatusLog(settings) as status:
            await produce_jobs(settings, jobs)
            await status.wait_for(
                lambda: len(workers_seen(status)) == 2 and len(completions(status)) >= KILL_JOBS // 4,
                60,
                "both workers to be busy",
            )
            a.kill()
            a.wait(10)
            await status.wait_for(lambda: len(completions(status)) == len(jobs), 120, "every job to complete")
            assert b.poll() is None, "the surviving worker died:\n" + procs.tail(tmp_path / "b.log")
            killed, survivor = Journal.read(tmp_path / "a"), Journal.read(tmp_path / "b")
            started_twice = {j for j in killed.started if survivor.started[j] or killed.started[j] > 1}
            running_at_kill = set(killed.started) - killed.ended
            finished_unrecorded = started_twice - running_at_kill
            completed_twice = [j for j, n in distinct_completions(status).items() if n > 1]
            print(
                f"kill -9: {len(started_twice)} started twice ({len(running_at_kill)} running at the kill, "
                f"{len(finished_unrecorded)} finished but unrecorded), {len(completed_twice)} completed twice"
            )
            assert len(running_at_kill) <= KILL_CONCURRENCY
            # the README's bound: the jobs it was running, plus those it finished while their
            # completion record was on its way to Redis (a long take-in can stretch that)
            assert len(started_twice) <= 3 * KILL_CONCURRENCY, f"{len(started_twice)} jobs ran twice"
            assert completed_twice == [], "a job completed twice: its completion record came too late"
    finally:
        procs.stop(a)
        procs.stop(b)


async def test_completed_job_is_not_run_again_when_redelivered(
    settings: Settings, env: dict[str, str], tmp_path: Path, redis: Redis
) -> None:
    """A worker killed after completing jobs but before committing: its successor skips them."""
    jobs = [make_job("example.echo", {"i": i}) for i in range(20)]
    no_commits = {**env, "JOBSTREAM_COMMIT_INTERVAL_MS": "3600000"}
    first = procs.spawn(
        [sys.executable, "-m", "jobstream.cli", "worker", "consumer.examples:app"],
        env=no_commits,
        log=tmp_path / "a.log",
    )
    second: subprocess.Popen[bytes] | None = None
    try:
        async with StatusLog(settings) as status:
            await produce_jobs(settings, jobs)
            await status.wait_for(lambda: len(completions(status)) == len(jobs), 60, "every job to complete")
            done = DoneStore(redis, settings.redis_prefix, 3600)
            await wait_until(lambda: done.seen([j.id for j in jobs]), len(jobs), "the completed ids in Redis")
            first.kill()
            first.wait(10)
            second = start_worker(env, tmp_path / "b.log")
            marker = make_job("example.echo", {"marker": True})
            await produce_jobs(settings, [marker])
            await status.wait_for(lambda: "completed" in status.states(marker.id), 60, "the marker job")
            assert max(runs(status).values()) == 1, "a completed job ran again"
    finally:
        procs.stop(first)
        if second is not None:
            procs.stop(second)


async def test_chain_survives_a_worker_kill_mid_chain(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL while the second link runs: a new worker finishes the chain; no child lost, none doubled."""
    third = JobSpec(type="example.echo", payload={"step": 3})
    second = JobSpec(type="example.sleep", payload={"ms": 3_000}, then=[third])
    first = make_job("example.echo", {"step": 1}, then=[second])
    b_id = child_job_id(first.id, 0)
    c_id = child_job_id(b_id, 0)
    killed = start_worker(env, tmp_path / "a.log")
    survivor: subprocess.Popen[bytes] | None = None
    try:
        async with StatusLog(settings) as status:
            await produce_jobs(settings, [first])
            await status.wait_for(lambda: "active" in status.states(b_id), 60, "the second link to start")
            killed.kill()
            killed.wait(10)
            survivor = start_worker(env, tmp_path / "b.log")
            await status.wait_for(lambda: "completed" in status.states(c_id), 90, "the third link")
            assert status.states(c_id).count("completed") == 1, "the last child ran twice"
            # the first link ran once; its completed event may come twice, the same event:
            # killed between Kafka's ack and Redis's confirm, the worker left its record
            # unconfirmed, and the survivor sends the recorded event again (DESIGN: Process)
            assert status.states(first.id).count("active") == 1, "the first link ran twice"
            events = status.events[first.id]
            first_done = {(e["attempt"], e["at"]) for e in events if e["state"] == "completed"}
            assert len(first_done) == 1, f"the first link completed more than once: {first_done}"
            children = {e["job_id"] for evs in status.events.values() for e in evs if e.get("parent_id")}
            assert children == {b_id, c_id}
    finally:
        procs.stop(killed)
        if survivor is not None:
            procs.stop(survivor)


def _assigned(log: Path) -> list[int]:
    """Each "assigned N partitions" the worker logged, in order."""
    return [int(n) for n in re.findall(r" assigned (\d+) partitions", procs.tail(log, 100_000))]


@pytest.mark.parametrize("static", [True, False])
async def test_a_worker_restarted_under_its_instance_id_moves_no_partition(
    env: dict[str, str], settings: Settings, tmp_path: Path, static: bool
) -> None:
    """Two workers; one stopped with SIGTERM and started again at once (well within the
    session timeout). With instance ids (static membership) the other is never reassigned
    and the restarted one gets as many partitions back; without, the other is reassigned
    (the contrast shows the test can fail). Jobs submitted afterwards all complete."""
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    envs = [
        {
            **env,
            "JOBSTREAM_SESSION_TIMEOUT_MS": "20000",
            **({"JOBSTREAM_INSTANCE_ID": f"w-{n}"} if static else {}),
        }
        for n in "ab"
    ]

    def start(i: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "jobstream.cli", "worker", "consumer.examples:app"]
        return procs.spawn(args, env=envs[i], log=logs[i])

    total = (len(settings.topics.job_topics) + len(settings.retry_tier_names)) * settings.partitions
    a, b = start(0), start(1)
    try:
        procs.wait_until(
            lambda: all(_assigned(log) for log in logs) and sum(_assigned(log)[-1] for log in logs) == total,
            timeout_s=60,
            what="the two workers to share every partition",
        )
        settled, first = len(_assigned(logs[1])), _assigned(logs[0])[-1]
        procs.stop(a, grace_s=30)
        a = start(0)
        procs.wait_until(
            lambda: len(_assigned(logs[0])) >= 2, timeout_s=60, what="the restarted worker's partitions"
        )
        jobs = [make_job("example.echo", {"i": i}) for i in range(200)]
        await produce_jobs(settings, jobs)
        async with StatusLog(settings) as status:
            await status.wait_for(
                lambda: all("completed" in status.states(j.id) for j in jobs), 60, "every job to complete"
            )
        if static:
            assert len(_assigned(logs[1])) == settled, "the other worker was reassigned"
            assert _assigned(logs[0])[-1] == first
        else:
            assert len(_assigned(logs[1])) > settled
    finally:
        for proc in (a, b):
            procs.stop(proc, grace_s=30)
