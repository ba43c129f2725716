"""Topics grown while the pipeline runs (issue 11): `jobstream topics --partitions N` adds
partitions, and running workers take them without a restart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaProducer

from jobstream.cli import procs
from jobstream.settings import Settings
from schemas import Priority, encode_job, job_headers
from tests.conftest import MS
from tests.helpers import StatusLog, make_job


def _topics(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobstream.cli", "topics", *args], env=env, capture_output=True, text=True
    )


async def test_workers_take_partitions_added_while_they_run(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """A worker runs on 6 partitions; `jobstream topics --partitions 9` grows the job, retry
    and dead-letter topics; a job written to each new partition completes, the worker never
    restarted. Fewer partitions than there are is refused (Kafka cannot shrink a topic)."""
    env = {**env, "JOBSTREAM_METADATA_MAX_AGE_MS": "1000"}
    log_path = tmp_path / "worker.log"
    worker = procs.spawn(
        [sys.executable, "-m", "jobstream.cli", "worker", "consumer.examples:app"], env=env, log=log_path
    )
    try:
        procs.wait_until(
            lambda: re.search(r"assigned [1-9]", procs.tail(log_path, 200)) is not None,
            timeout_s=60_000 * MS,
            what="the worker to be assigned partitions",
        )
        done = _topics(env, "--partitions", "9")
        assert done.returncode == 0, done.stderr
        t = settings.topics
        grown = {*t.job_topics, *(t.retry(tier) for tier in settings.retry_tier_names), t.dlq}
        said, _, names = done.stdout.splitlines()[-1].partition(": ")
        assert said == "9 partitions now" and set(names.split(", ")) == grown, done.stdout

        jobs = [make_job("example.echo", {"n": p}) for p in (6, 7, 8)]
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for p, job in zip((6, 7, 8), jobs, strict=True):
                await producer.send_and_wait(
                    t.jobs(Priority.normal), encode_job(job), partition=p, headers=job_headers(job)
                )
        finally:
            await producer.stop()
        async with StatusLog(settings) as log:
            await log.wait_for(
                lambda: all("completed" in log.states(j.id) for j in jobs),
                60_000 * MS,
                "the jobs on the new partitions to complete",
            )
        assert worker.poll() is None, "the worker exited"

        fewer = _topics(env, "--partitions", "3")
        assert fewer.returncode == 1 and "Kafka cannot take partitions away, asked 3" in fewer.stderr
    finally:
        procs.stop(worker, grace_s=30)
