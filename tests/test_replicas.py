"""Replicas of the API and the gateway (issue 11), as real processes.

- Gateways that restart and run side by side: a client that comes back to any gateway with
  its last cursor gets every event the status topic holds after it, once, then the live
  stream.
- Two API processes: their delay schedulers fire each job once between them (exclusive
  claims in Redis), and one survives the other's kill -9; their dead-letter indexers share
  one consumer group; replays started on both replay each record once.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from jobstream.cli import procs
from jobstream.kafka import admin_client
from jobstream.settings import Settings
from tests.helpers import StatusLog, eventually, wait_until
from tests.pipeline import run_pipeline, spawn_service


class Follower:
    """Follows every event through whichever gateway it is given, carrying its cursor along
    as the dashboard does (from every frame that has one)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cursor: str | None = None
        self.errors: list[dict[str, Any]] = []
        self.subscribed = asyncio.Event()  # the first subscription was answered

    async def follow(self, ws: str, until_events: int | None = None) -> None:
        """Subscribe (with the cursor once there is one) and read until the connection ends,
        or until `until_events` events have arrived and every frame queued before is in."""
        selection: dict[str, Any] = {"all": True}
        if self.cursor is not None:
            selection["cursor"] = self.cursor
        try:
            async with connect(ws, max_size=None) as conn:
                await conn.send(orjson.dumps({"subscribe": selection}).decode())
                barrier_sent = False
                async for raw in conn:
                    frame = orjson.loads(raw)
                    if "error" in frame:
                        self.errors.append(frame)
                    self.events.extend(frame.get("events", ()))
                    if "cursor" in frame:
                        self.cursor = frame["cursor"]
                    if "subscribed" in frame:
                        self.subscribed.set()
                        if barrier_sent:
                            return  # every frame queued before the barrier has arrived
                    if until_events is not None and not barrier_sent and len(self.events) >= until_events:
                        await conn.send(orjson.dumps({"subscribe": {"jobs": []}}).decode())
                        barrier_sent = True
        except (ConnectionClosed, OSError):
            return


async def _submit(http: httpx.AsyncClient, ids: list[str], stop: asyncio.Event) -> None:
    """About 200 jobs a second, in batches of 10, until `stop`."""
    while not stop.is_set():
        r = await http.post("/jobs/batch", json={"jobs": [{"type": "example.echo", "payload": {}}] * 10})
        assert r.status_code == 200, r.text
        ids.extend(row["id"] for row in r.json()["results"])
        await asyncio.sleep(0.05)


async def test_a_follower_moves_between_gateways_and_misses_nothing(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """While jobs flow: the first gateway is killed (-9) under a follower, which resumes on a
    second gateway (its ring holds what was missed); the second is stopped, and the follower
    resumes on a third started after it (what it missed is only in Kafka). Every event of
    the status topic reaches the follower exactly once, each job's in order."""
    with run_pipeline(env, tmp_path, workers=1) as p:
        assert p.gateway_proc is not None
        second = spawn_service("gateway", env, tmp_path / "gateway-2.log")
        await asyncio.to_thread(second.wait_ready)
        third = None
        async with StatusLog(settings) as log, httpx.AsyncClient(base_url=p.api, timeout=30) as http:
            follower, ids, stop = Follower(), list[str](), asyncio.Event()
            following = asyncio.create_task(follower.follow(p.ws))
            await asyncio.wait_for(follower.subscribed.wait(), 30)  # so it sees every job's events
            submitting = asyncio.create_task(_submit(http, ids, stop))
            try:
                await eventually(lambda: len(follower.events) >= 300, "300 events on the first gateway")
                p.gateway_proc.send_signal(signal.SIGKILL)
                await following

                following = asyncio.create_task(follower.follow(second.ws))
                seen = len(follower.events)
                await eventually(lambda: len(follower.events) >= seen + 300, "300 more on the second")
                await asyncio.to_thread(procs.stop, second.proc)
                await following

                # the third starts after the events the follower missed: they are only in Kafka
                third = spawn_service("gateway", env, tmp_path / "gateway-3.log")
                await asyncio.to_thread(third.wait_ready)
                stop.set()
                await submitting
                await log.wait_for(
                    lambda: all("completed" in log.states(j) for j in ids), 120, "every job to complete"
                )
                total = sum(len(events) for events in log.events.values())
                try:
                    await asyncio.wait_for(follower.follow(third.ws, until_events=total), 60)
                except TimeoutError:
                    missing = sum(len(v) for v in log.events.values()) - len(follower.events)
                    raise AssertionError(
                        f"the follower has {len(follower.events)} of {total} events ({missing} missing), "
                        f"errors {follower.errors}, cursor {follower.cursor}\n"
                        + "\n".join(procs.tail(g.log, 40) for g in (second, third))
                    ) from None
                metrics = (await http.get(f"{third.http}/metrics")).text
            finally:
                stop.set()
                await asyncio.gather(submitting, return_exceptions=True)
                for gateway in (second, third):
                    if gateway is not None:
                        await asyncio.to_thread(procs.stop, gateway.proc)
    assert follower.errors == []
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in follower.events:
        got[event["job_id"]].append(event)
    assert len(follower.events) == total
    assert got == log.events  # exactly once, each job's events in the topic's order
    read_back = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("jobstream_gateway_events_read_back_total")
    )
    assert read_back > 0, "the third gateway read nothing back from Kafka"
    print(f"\nfollowed {total} events of {len(ids)} jobs across 3 gateways; {read_back:g} read back")


async def _members(settings: Settings, group: str) -> list[str]:
    """The member ids of a consumer group."""
    async with admin_client(settings) as admin:
        (response,) = await admin.describe_consumer_groups([group])
        members = response.groups[0][5]  # (error, group, state, protocol type, protocol, members)
        return [m[0] for m in members]


async def _fired(http: httpx.AsyncClient, api: str) -> float:
    """`jobstream_api_scheduler_fired_total` of one API."""
    text = (await http.get(f"{api}/metrics")).text
    prefix = "jobstream_api_scheduler_fired_total"
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(prefix)))


async def _replay(http: httpx.AsyncClient, api: str, ids: list[str]) -> dict[str, Any]:
    """Start a replay of `ids` on `api` and wait until it is done; its final report."""
    started = await http.post(f"{api}/dlq/replay", json={"ids": ids, "dry_run": False})
    assert started.status_code == 202, started.text
    url = f"{api}/dlq/replays/{started.json()['replay_id']}"

    async def finished() -> list[dict[str, Any]]:
        report: dict[str, Any] = (await http.get(url)).json()
        return [] if report["state"] == "running" else [report]

    await wait_until(finished, 1, f"the replay on {api} to finish", 60)
    (report,) = await finished()
    assert report["state"] == "done", report
    return report


async def _delayed(http: httpx.AsyncClient, api: str, n: int, first_ms: int) -> list[str]:
    """Submit `n` delayed jobs to `api`, due 10 ms apart from `first_ms` on; their ids."""
    jobs = [{"type": "example.echo", "payload": {}, "delay_ms": first_ms + 10 * i} for i in range(n)]
    r = await http.post(f"{api}/jobs/batch", json={"jobs": jobs})
    assert r.status_code == 200, r.text
    assert all(row["state"] == "scheduled" for row in r.json()["results"]), r.text
    return [row["id"] for row in r.json()["results"]]


async def test_two_apis_share_the_background_work(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """Two API processes, each with a delay scheduler and a dead-letter indexer: the
    indexers are the two members of one group and index each dead letter once; replays
    started on both at once replay each record once; both schedulers fire, and each of 300
    delayed jobs runs once; after one API is killed (-9) with 200 more waiting, the other
    fires them all (a job run twice is counted and printed: only jobs the dead one fired in
    its last moments, before it told Redis, may fire twice; here at most a quarter)."""
    env = {**env, "JOBSTREAM_SCHEDULER_LEASE_MS": "2000"}  # a dead scheduler's claims return soon
    with run_pipeline(env, tmp_path, workers=1) as p:
        assert p.api_proc is not None
        other = spawn_service("api", env, tmp_path / "api-2.log")
        apis = [p.api, other.http]
        try:
            await asyncio.to_thread(other.wait_ready)
            group = f"{settings.topic_prefix}.dlq-indexer"

            async def members() -> list[str]:
                return await _members(settings, group)

            await wait_until(members, 2, "both indexers in one group", 60)
            async with StatusLog(settings) as log, httpx.AsyncClient(timeout=30) as http:

                def count(job: str, state: str) -> int:
                    return log.states(job).count(state)

                # dead letters: indexed once, replayed once between two replays
                orphan = {"type": "nobody.handles", "payload": {}}
                orphans = [
                    (await http.post(f"{apis[i % 2]}/jobs", json=orphan)).json()["id"] for i in range(20)
                ]

                async def listed() -> list[str]:
                    items = (await http.get(f"{other.http}/dlq", params={"limit": 500})).json()["items"]
                    return [d["id"] for d in items if d["id"] in orphans]

                await wait_until(listed, 20, "20 dead letters listed once each", 60)
                reports = await asyncio.gather(*(_replay(http, api, orphans) for api in apis))
                assert sum(r["replayed"] for r in reports) == 20, reports
                assert sum(r["matched"] for r in reports) == 40, reports
                await log.wait_for(
                    lambda: all(count(o, "replayed") for o in orphans), 60, "20 replayed events"
                )
                assert all(count(o, "replayed") == 1 for o in orphans)

                # delayed jobs: both schedulers claim; each job fires and runs once
                first = [j for api in apis for j in await _delayed(http, api, 150, 500)]
                await log.wait_for(lambda: all(count(j, "completed") for j in first), 60, "300 delayed jobs")
                assert all(count(j, "active") == 1 and count(j, "queued") == 1 for j in first)
                fired = await asyncio.gather(*(_fired(http, api) for api in apis))
                assert all(fired) and sum(fired) == 300, fired

                # one API dies with 200 waiting: the other fires them all
                later = [j for api in apis for j in await _delayed(http, api, 100, 300)]
                await log.wait_for(lambda: sum(count(j, "queued") > 0 for j in later) >= 20, 60, "firing")
                p.api_proc.send_signal(signal.SIGKILL)
                await log.wait_for(lambda: all(count(j, "completed") for j in later), 60, "200 more")
                twice = sum(count(j, "active") > 1 for j in later)
                print(
                    f"\nscheduler fired {fired}; after kill -9 of one API: 200 more fired, {twice} run twice"
                )
                assert twice <= 50, f"{twice} run twice: more than a dead scheduler's last moments fire"
        finally:
            await asyncio.to_thread(procs.stop, other.proc)
