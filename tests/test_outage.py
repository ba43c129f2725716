"""Kafka going away and coming back, seen from the API."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from jobstream.cli.stack import KafkaBroker
from jobstream.kafka import ensure_topics
from jobstream.settings import ApiSettings
from producer import create_app
from tests.conftest import Services
from tests.helpers import asgi_client

pytestmark = pytest.mark.slow


async def wait_ready(http: httpx.AsyncClient, want: int, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        r = await http.get("/readyz")
        if r.status_code == want or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.2)


async def test_kafka_outage_answers_503_and_recovers(
    private_kafka: KafkaBroker, services: Services, prefix: str
) -> None:
    """Broker down: submit answers 503 with Retry-After and readyz names Kafka; back up: 202."""
    broker = private_kafka
    settings = ApiSettings(
        kafka_bootstrap_servers=broker.bootstrap,
        redis_url=services.redis_url,
        topic_prefix=prefix,
        submit_timeout_s=3,
    )
    await ensure_topics(settings)
    app = create_app(settings)
    async with asgi_client(app) as http:
        r = await http.post("/jobs", json={"type": "example.echo"})
        assert r.status_code == 202, r.text

        broker.stop()
        r = await http.post("/jobs", json={"type": "example.echo"})
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert "kafka" in r.text.lower()
        ready = await wait_ready(http, 503, 30)
        assert ready.status_code == 503 and "kafka" in ready.text.lower()

        broker.start()
        ready = await wait_ready(http, 200, 60)
        assert ready.status_code == 200, ready.text
        r = await http.post("/jobs", json={"type": "example.echo"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        r = await http.get(f"/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["state"] == "queued"
