"""New keyless jobs keep off partitions whose sends are stuck (`jobstream.stalls`)."""

from __future__ import annotations

from aiokafka.admin import NewTopic

from jobstream.kafka import admin_client, make_producer
from jobstream.settings import ApiSettings, Settings
from jobstream.stalls import Stalls, job_id_avoiding
from producer.app import create_app
from schemas import Priority, now_ms, partition_for
from tests.helpers import asgi_app, eventually


def test_ids_hash_away_from_stuck_partitions_of_both_topics() -> None:
    stuck_jobs, stuck_status = frozenset({1, 4}), frozenset({2})
    for _ in range(500):
        job_id = job_id_avoiding(now_ms(), 6, stuck_jobs, 3, stuck_status)
        assert partition_for(job_id, 6) not in stuck_jobs
        assert partition_for(job_id, 3) not in stuck_status


def test_half_a_topic_stuck_is_a_slow_cluster_and_nothing_is_avoided() -> None:
    """Half the partitions or more stuck is no leader move: ids spread over all of them."""
    seen = {
        partition_for(job_id_avoiding(now_ms(), 4, frozenset({0, 1}), 3, frozenset()), 4) for _ in range(400)
    }
    assert seen == {0, 1, 2, 3}


async def test_the_api_gives_keyless_jobs_ids_away_from_stuck_partitions(settings: Settings) -> None:
    """With partitions 0 and 1 of the normal topic and 2 of the status topic stuck, every
    keyless job submitted lands elsewhere on both and is counted as steered; a job with a
    key keeps its partition (it is not counted: the count stays at the 40 keyless ones)."""
    s = ApiSettings(**settings.model_dump())
    topic, status = s.topics.jobs(Priority.normal), s.topics.status
    stuck = {topic: frozenset({0, 1}), status: frozenset({2})}
    async with asgi_app(create_app(s)) as (client, state):
        submitter = state["runtime"].submitter
        submitter._stalls.stuck = lambda: stuck  # as if a leader were moving
        ids = [(await client.post("/jobs", json={"type": "t.x"})).json()["id"] for _ in range(40)]
        assert (await client.post("/jobs", json={"type": "t.x", "key": "k-1"})).status_code == 202
        metrics = (await client.get("/metrics")).text
    for job_id in ids:
        assert partition_for(job_id, s.partitions) not in stuck[topic]
        assert partition_for(job_id, s.status_partitions) not in stuck[status]
    assert "jobstream_api_jobs_steered_total 40.0" in metrics


async def test_a_batch_waiting_longer_than_the_limit_marks_its_partition(settings: Settings) -> None:
    """Read from the installed aiokafka's accumulator: a batch held back (here by a long
    linger, as a leader move would hold it) marks its partition once it waited past the
    limit, and only it; once sent, nothing is stuck."""
    topic = f"{settings.topic_prefix}.stalls"
    async with admin_client(settings) as admin:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    producer = make_producer(settings, linger_ms=3_000)
    async with producer:
        stalls = Stalls(lambda: producer.current, after_s=0.05, every_s=0)
        assert stalls.stuck() == {}
        sent = await producer.send(topic, b"held", partition=2)
        await eventually(lambda: bool(stalls.stuck()), "the held batch to count as stuck")
        assert stalls.stuck() == {topic: frozenset({2})}
        await sent  # the linger ran out
        assert stalls.stuck() == {}
