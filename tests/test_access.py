"""API keys: scopes and job-type patterns on the API, the gateway and its WebSocket, the
`jobstream keys` command, and the refusal to serve an open API beyond loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from jobstream.access.keys import (
    KeyError_,
    KeyRecord,
    Principal,
    new_key,
    parse_patterns,
    parse_scopes,
    split_key,
)
from jobstream.access.ring import KeyRing
from jobstream.cli.stack import RedisServer
from jobstream.kafka import make_producer
from jobstream.projection import Projection
from jobstream.settings import ApiSettings, GatewaySettings, Settings
from jobstream.status_publisher import StatusPublisher
from producer.app import create_app
from tests.helpers import asgi_app
from tests.test_gateway import Peer, event, publish, running_gateway

# -- pure: keys, scopes, patterns -----------------------------------------------------------


def test_a_key_is_checked_by_its_hash_only() -> None:
    key, record = new_key(("submit", "read"), ("images.*",), "ci")
    key_id, secret = split_key(key) or ("", "")
    assert key_id == record.id and record.matches(secret) and not record.matches(secret + "x")
    assert secret not in json.dumps(record.as_dict())  # only the SHA-256 is kept
    assert KeyRecord.from_dict(record.as_dict()) == record
    assert split_key("js_nothex_" + "a" * 40) is None and split_key("Bearer x") is None


def test_scopes_and_patterns() -> None:
    p = Principal.of(new_key(parse_scopes("admin"), parse_patterns("images.*, video.encode"))[1])
    assert p.can("read") and p.can("admin") and not p.can("submit")  # admin includes read, not submit
    assert p.allows("images.resize") and p.allows("video.encode") and not p.allows("video.decode")
    assert Principal.of(new_key(("read",))[1]).allows("anything.at.all")
    with pytest.raises(KeyError_, match="unknown scope 'write'"):
        parse_scopes("read,write")
    with pytest.raises(KeyError_, match="job-type pattern"):
        parse_patterns("images/*")


def test_open_api_beyond_loopback_is_refused_unless_meant() -> None:
    """Auth off on 0.0.0.0 is refused naming both ways out; loopback, INSECURE or keys are fine."""
    with pytest.raises(ValidationError, match="JOBSTREAM_AUTH=required") as refused:
        ApiSettings(host="0.0.0.0")
    assert "JOBSTREAM_INSECURE=true" in str(refused.value)
    ApiSettings(host="0.0.0.0", insecure=True)
    ApiSettings(host="0.0.0.0", auth="required")
    GatewaySettings(host="::1")
    with pytest.raises(ValidationError, match="JOBSTREAM_API_KEYS: key id 'x' is not 12 hex digits"):
        ApiSettings(api_keys=[{"id": "x", "hash": "0" * 64, "scopes": ["read"]}])


def test_the_api_command_refuses_to_listen_openly_in_one_line(env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "jobstream.cli", "api"],
        env={**env, "JOBSTREAM_HOST": "0.0.0.0", "JOBSTREAM_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "JOBSTREAM_AUTH=required" in lines[0], run.stderr


# -- the API with keys required -------------------------------------------------------------

KEYS = {  # name -> (scopes, patterns)
    "submitter": (("submit",), ()),
    "reader": (("read",), ()),
    "admin": (("admin",), ()),
    "images": (("submit", "read", "admin"), ("images.*",)),
}


class Keys:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []
        for name, (scopes, types) in KEYS.items():
            key, record = new_key(scopes, types, name)  # type: ignore[arg-type]
            self.keys[name] = key
            self.records.append(record.as_dict())

    def auth(self, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture
def keys() -> Keys:
    return Keys()


@contextlib.asynccontextmanager
async def api_with_keys(settings: Settings, keys: Keys) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    s = ApiSettings(
        **{**settings.model_dump(), "auth": "required", "api_keys": keys.records, "auth_cache_s": 0}
    )
    async with asgi_app(create_app(s), base_url="http://api") as (client, state):
        yield client, state["runtime"]


async def test_requests_without_a_key_or_with_a_bad_one_get_401(settings: Settings, keys: Keys) -> None:
    async with api_with_keys(settings, keys) as (client, _):
        for method, path in [("POST", "/jobs"), ("POST", "/jobs/batch"), ("GET", "/jobs/x"),
                             ("GET", "/queues"), ("GET", "/dlq"), ("DELETE", "/jobs/x"),
                             ("POST", "/dlq/replay")]:  # fmt: skip
            r = await client.request(method, path, json={"type": "t"})
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization: Bearer <key>" in r.json()["detail"]
        r = await client.post(
            "/jobs", json={"type": "t"}, headers={"authorization": "Bearer js_0123456789ab_nope"}
        )
        assert r.status_code == 401 and "not valid" in r.json()["detail"]
        r = await client.get("/queues", headers={"authorization": "Basic dXNlcjpwYXNz"})
        assert r.status_code == 401
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):  # open, for probes and scrapers
            assert (await client.get(path)).status_code == 200, path


async def test_each_scope_opens_its_routes_only(settings: Settings, keys: Keys) -> None:
    async with api_with_keys(settings, keys) as (client, _):
        r = await client.post("/jobs", json={"type": "demo.echo"}, headers=keys.auth("reader"))
        assert r.status_code == 403 and "lacks the scope 'submit'" in r.json()["detail"], r.text
        r = await client.post("/jobs", json={"type": "demo.echo"}, headers=keys.auth("submitter"))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        r = await client.get(f"/jobs/{job_id}", headers=keys.auth("submitter"))
        assert r.status_code == 403 and "'read'" in r.json()["detail"]
        assert (await client.get(f"/jobs/{job_id}", headers=keys.auth("reader"))).status_code == 200
        assert (await client.get("/queues", headers=keys.auth("admin"))).status_code == 200  # admin reads
        r = await client.delete(f"/jobs/{job_id}", headers=keys.auth("reader"))
        assert r.status_code == 403 and "'admin'" in r.json()["detail"]
        assert (await client.delete(f"/jobs/{job_id}", headers=keys.auth("admin"))).status_code in (
            200,
            202,
            409,
        )
        r = await client.post("/dlq/replay", json={}, headers=keys.auth("reader"))
        assert r.status_code == 403
        assert (await client.post("/dlq/replay", json={}, headers=keys.auth("admin"))).status_code == 200


async def test_a_key_limited_to_types_submits_and_sees_only_those(settings: Settings, keys: Keys) -> None:
    async with api_with_keys(settings, keys) as (client, _):
        r = await client.post("/jobs", json={"type": "video.encode"}, headers=keys.auth("images"))
        assert r.status_code == 403, r.text
        assert "'video.encode'" in r.json()["detail"] and "images.*" in r.json()["detail"]
        r = await client.post("/jobs", json={"type": "images.resize"}, headers=keys.auth("images"))
        assert r.status_code == 202, r.text
        mine = r.json()["id"]
        batch = {"jobs": [{"type": "images.crop"}, {"type": "video.encode"}]}
        rows = (await client.post("/jobs/batch", json=batch, headers=keys.auth("images"))).json()["results"]
        assert "id" in rows[0] and "error" not in rows[0]
        assert rows[1]["error"]["status"] == 403 and "video.encode" in rows[1]["error"]["message"]
        other = (
            await client.post("/jobs", json={"type": "video.encode"}, headers=keys.auth("submitter"))
        ).json()
        assert (await client.get(f"/jobs/{mine}", headers=keys.auth("images"))).status_code == 200
        r = await client.get(f"/jobs/{other['id']}", headers=keys.auth("images"))
        assert r.status_code == 403 and "video.encode" in r.json()["detail"]
        r = await client.delete(f"/jobs/{other['id']}", headers=keys.auth("images"))
        assert r.status_code == 403
        r = await client.get("/dlq", params={"type": "video.encode"}, headers=keys.auth("images"))
        assert r.status_code == 403
        r = await client.post("/dlq/replay", json={"types": ["video.encode"]}, headers=keys.auth("images"))
        assert r.status_code == 403


async def test_schedules_need_admin_and_a_limited_key_keeps_to_its_types(
    settings: Settings, keys: Keys
) -> None:
    """Making, pausing or running a schedule needs `admin`, reading one `read`; a key limited
    to some types may make only schedules of those types, and lists and sees only them."""
    nightly = {"cron": "0 3 * * *", "type": "video.encode"}
    async with api_with_keys(settings, keys) as (client, _):
        r = await client.put("/schedules/video", json=nightly, headers=keys.auth("submitter"))
        assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
        assert (
            await client.put("/schedules/video", json=nightly, headers=keys.auth("admin"))
        ).status_code == 201
        r = await client.put("/schedules/video2", json=nightly, headers=keys.auth("images"))
        assert r.status_code == 403 and "'video.encode'" in r.json()["detail"], r.text
        images = {**nightly, "type": "images.resize"}
        assert (
            await client.put("/schedules/img", json=images, headers=keys.auth("images"))
        ).status_code == 201
        r = await client.put(
            "/schedules/video", json=images, headers=keys.auth("images")
        )  # not its to replace
        assert r.status_code == 403 and "'video.encode'" in r.json()["detail"], r.text
        listed = (await client.get("/schedules", headers=keys.auth("reader"))).json()["items"]
        assert [s["name"] for s in listed] == ["img", "video"]
        mine = (await client.get("/schedules", headers=keys.auth("images"))).json()["items"]
        assert [s["name"] for s in mine] == ["img"]
        for method, path in (("GET", ""), ("POST", "/pause"), ("POST", "/run"), ("DELETE", "")):
            r = await client.request(method, f"/schedules/video{path}", headers=keys.auth("images"))
            assert r.status_code == 403, (method, path, r.text)
        r = await client.post("/schedules/video/pause", headers=keys.auth("reader"))
        assert r.status_code == 403


async def test_delayed_jobs_are_listed_soonest_first_within_the_keys_types(
    settings: Settings, keys: Keys
) -> None:
    async with api_with_keys(settings, keys) as (client, _):
        ids = {}
        for job_type, delay in (
            ("video.encode", 3_600_000),
            ("images.crop", 7_200_000),
            ("images.resize", 60_000),
        ):
            r = await client.post(
                "/jobs", json={"type": job_type, "delay_ms": delay}, headers=keys.auth("submitter")
            )
            assert r.status_code == 202 and r.json()["state"] == "scheduled", r.text
            ids[job_type] = r.json()["id"]
        everything = (await client.get("/delayed", headers=keys.auth("reader"))).json()
        assert [j["type"] for j in everything["items"]] == ["images.resize", "video.encode", "images.crop"]
        assert everything["waiting"] == 3 and everything["items"][0]["id"] == ids["images.resize"]
        mine = (await client.get("/delayed", headers=keys.auth("images"))).json()
        assert [j["type"] for j in mine["items"]] == ["images.resize", "images.crop"]
        assert (
            await client.get("/delayed", params={"limit": 0}, headers=keys.auth("reader"))
        ).status_code == 422


async def test_keys_in_redis_work_and_stop_working_when_revoked(
    settings: Settings, keys: Keys, redis: Redis
) -> None:
    s = ApiSettings(**settings.model_dump())
    ring = KeyRing.of(s, redis)
    key, record = new_key(("submit",), name="from redis")
    await ring.add(record)
    async with api_with_keys(settings, keys) as (client, _):
        headers = {"authorization": f"Bearer {key}"}
        assert (await client.post("/jobs", json={"type": "t.x"}, headers=headers)).status_code == 202
        assert await ring.revoke(record.id)
        r = await client.post("/jobs", json={"type": "t.x"}, headers=headers)
        assert r.status_code == 401  # auth_cache_s=0 here; 10 s by default


async def test_keys_in_redis_while_redis_is_down_answer_503_not_401(
    settings: Settings, keys: Keys, private_redis: RedisServer
) -> None:
    """A key only Redis could check gets 503 naming Redis (not 401: it may be valid) while
    Redis is down; a key checked before keeps working from the cache, and keys in settings
    need no Redis; with Redis back, the waiting key works."""
    s = ApiSettings(
        **{**settings.model_dump(), "redis_url": private_redis.url, "auth": "required",
           "api_keys": keys.records, "auth_cache_s": 600}
    )  # fmt: skip
    stored = Redis.from_url(private_redis.url)
    ring = KeyRing.of(s, stored)
    checked, waiting = new_key(("read",), name="checked"), new_key(("read",), name="waiting")
    for _, record in (checked, waiting):
        await ring.add(record)
    await stored.aclose()

    def auth(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    async with asgi_app(create_app(s), base_url="http://api") as (client, _):
        assert (await client.get("/jobs/j-1", headers=auth(checked[0]))).status_code == 404
        private_redis.stop()
        down = await client.get("/jobs/j-1", headers=auth(waiting[0]))
        assert down.status_code == 503, down.text
        assert down.json()["service"] == "redis" and "API key cannot be checked" in down.json()["detail"]
        assert "retry-after" in down.headers
        for key in (checked[0], keys.keys["reader"]):  # admitted; the lookup itself needs Redis
            r = await client.get("/jobs/j-1", headers=auth(key))
            assert r.status_code == 503 and "API key" not in r.json()["detail"], r.text
        private_redis.start()
        assert (await client.get("/jobs/j-1", headers=auth(waiting[0]))).status_code == 404


def test_the_keys_command_creates_lists_and_revokes(env: dict[str, str]) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobstream.cli", "keys", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = keys("create", "--scopes", "submit,read", "--types", "images.*", "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.split("_")[1]
    assert "shown once" in made.stderr
    listed = keys("list")
    assert listed.returncode == 0 and key_id in listed.stdout and "images.*" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout
    assert keys("create", "--scopes", "write").returncode == 2
    printed = keys("create", "--scopes", "read", "--print-setting")
    assert printed.returncode == 0 and KeyRecord.from_dict(json.loads(printed.stdout)).scopes == ("read",)
    assert keys("revoke", key_id).returncode == 0
    assert keys("revoke", key_id).returncode == 1
    assert key_id not in keys("list").stdout


# -- the gateway ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_with_keys(settings: Settings, keys: Keys) -> AsyncIterator[Any]:
    s = GatewaySettings(**{**settings.model_dump(), "auth": "required", "api_keys": keys.records})
    async with running_gateway(s) as running:
        yield running


async def closed_with(url: str, **kwargs: Any) -> tuple[int | None, str]:
    async with connect(url, **kwargs) as conn:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(conn.recv(), 10)
        assert conn.close_code is not None
        return conn.close_code, conn.close_reason or ""


async def test_websocket_needs_a_key_with_read(settings: Settings, keys: Keys) -> None:
    async with gateway_with_keys(settings, keys) as gw:
        code, reason = await closed_with(gw.ws)
        assert code == 4401 and "Authorization: Bearer" in reason
        code, _ = await closed_with(
            gw.ws, additional_headers={"authorization": "Bearer js_0123456789ab_nope"}
        )
        assert code == 4401
        code, reason = await closed_with(gw.ws, additional_headers=keys.auth("submitter"))
        assert code == 4403 and "'read'" in reason
        async with connect(gw.ws, additional_headers=keys.auth("reader")) as conn:
            reply = await Peer(conn).subscribe(all=True)
            assert reply["subscribed"]["all"] is True


async def test_browsers_connect_with_a_one_time_token(settings: Settings, keys: Keys) -> None:
    async with gateway_with_keys(settings, keys) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        assert (await http.post("/ws-token")).status_code == 401
        r = await http.post("/ws-token", headers=keys.auth("reader"))
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert r.json()["expires_in"] == 60
        async with connect(f"{gw.ws}?token={token}") as conn:
            assert "subscribed" in await Peer(conn).subscribe(all=True)
        code, reason = await closed_with(f"{gw.ws}?token={token}")  # used once
        assert code == 4401 and "POST /ws-token" in reason
        assert (await http.get("/", headers={})).status_code == 200  # the dashboard's page is open


async def test_a_limited_key_gets_only_its_types_on_the_feed(settings: Settings, keys: Keys) -> None:
    producer = make_producer(settings)
    status = StatusPublisher(producer, settings.topics.status, settings.status_partitions)
    async with (
        gateway_with_keys(settings, keys) as gw,
        producer,
        status as pub,
        connect(gw.ws, additional_headers=keys.auth("images")) as conn,
    ):
        limited = Peer(conn)
        await limited.subscribe(all=True, jobs=["v1"])
        await limited.send({"subscribe": {"types": ["video.encode"]}})
        refused = await limited.until(lambda f: "error" in f)
        assert refused["code"] == "forbidden" and "video.encode" in refused["error"]
        await publish(
            pub,
            event("i1", "queued", type_="images.resize"),
            event("v1", "queued", type_="video.encode"),
            event("i2", "queued", type_="images.crop"),
        )
        await limited.wait_events(2)
        await limited.barrier()
        # (two jobs: each on its own status partition, so in no set order)
        assert sorted(e["job_id"] for e in limited.events) == ["i1", "i2"]


async def test_a_limited_keys_snapshot_holds_only_its_types(
    settings: Settings, keys: Keys, redis: Redis
) -> None:
    """Subscribing to job ids, a limited key's snapshot leaves out jobs of other types, as if
    unknown, where an unlimited key's has both."""
    projection = Projection(redis, settings.redis_prefix, 3600)
    await projection.apply(
        [
            {"job_id": "snap-i", "type": "images.resize", "state": "completed", "attempt": 1, "at": 1},
            {"job_id": "snap-v", "type": "video.encode", "state": "completed", "attempt": 1, "at": 1},
        ]
    )
    async with gateway_with_keys(settings, keys) as gw:
        for name, expected in (("images", ["snap-i"]), ("reader", ["snap-i", "snap-v"])):
            async with connect(gw.ws, additional_headers=keys.auth(name)) as conn:
                peer = Peer(conn)
                await peer.send({"subscribe": {"jobs": ["snap-i", "snap-v"]}})
                snapshot = await peer.until(lambda f: "snapshot" in f)
                assert sorted(s["id"] for s in snapshot["snapshot"]) == expected, name


async def test_services_without_keys_say_loudly_that_access_is_open(env: dict[str, str]) -> None:
    """`jobstream api` with auth off warns once at start, naming how to turn keys on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobstream.cli", "api",
        env={**env, "JOBSTREAM_PORT": "0", "JOBSTREAM_SCHEDULER": "false"},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(60):
            while line := (await proc.stderr.readline()).decode():
                if "ACCESS IS OPEN" in line:
                    assert "JOBSTREAM_AUTH=required" in line
                    break
            else:
                raise AssertionError("the API exited without saying that access is open")
    finally:
        proc.terminate()
        await proc.wait()
