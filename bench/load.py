"""Load generators and probes for `python -m bench`: a lean keep-alive HTTP client, the wrk
script and parser, a fast Kafka preloader, offset probes, and a once-a-second progress line.

The HTTP client is raw asyncio on purpose: httpx costs more CPU per request than the API
spends on it, and on a 2-core machine the client must not be what is measured.
`python -m bench.load single URL CONNS SECONDS` is the fallback load for the
single-job scenario when wrk is missing; it prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from jobstream.kafka import make_producer
from jobstream.kafka_security import kafka_options
from jobstream.settings import Settings
from schemas import JobEnvelope, Priority, encode_job, job_headers, new_job_id

NOOP = {"type": "example.noop", "payload": {}, "priority": "normal"}
NOOP_BODY = orjson.dumps(NOOP)

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{"type":"example.noop","payload":{},"priority":"normal"}'
wrk.headers["Content-Type"] = "application/json"
"""


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- HTTP ----------------------------------------------------------------------------------


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one host; grows on demand, so a request never
    queues behind another inside the client."""

    def __init__(self, url: str, key: str | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._auth = f"Authorization: Bearer {key}\r\n" if key else ""  # an API key, when required
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request; a reused connection the server closed meanwhile (uvicorn closes
        idle keep-alive connections after 5 s) is replaced once, as browsers do."""
        if self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                conn[1].close()
        return await self._exchange(await self._open(), method, path, body)

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str, path: str, body: bytes
    ) -> tuple[int, bytes]:
        reader, writer = conn
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                chunks.append(await reader.readexactly(size + 2))
            await reader.readuntil(b"\r\n")
            data = b"".join(c[:-2] for c in chunks)
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append(conn)
        return status, data

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port, limit=64 * 1024 * 1024)

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def wait_ready(url: str, alive: Callable[[], bool], timeout_s: float = 90.0) -> None:
    """Poll `GET /readyz` until 200; fail early if the process died."""
    pool, deadline = HttpPool(url), time.monotonic() + timeout_s
    while True:
        if not alive():
            raise RuntimeError(f"{url} exited while starting")
        try:
            if (await asyncio.wait_for(pool.request("GET", "/readyz"), 2))[0] == 200:
                await pool.close()
                return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pool = HttpPool(url)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


async def warm_up(
    url: str, path: str, body: bytes, requests: int, conns: int, key: str | None = None
) -> None:
    """Send `requests` requests over `conns` connections, so that the first measured
    request does not pay for connections, metadata and code paths taken the first time."""
    left = [requests]

    async def loop() -> None:
        pool = HttpPool(url, key)
        while left[0] > 0:
            left[0] -= 1
            await pool.request("POST", path, body)
        await pool.close()

    await asyncio.gather(*(loop() for _ in range(conns)))


def parse_wrk(text: str) -> dict[str, float]:
    """The figures wrk prints: requests, seconds, non-2xx, socket errors, latency p50/p99."""
    out: dict[str, float] = {"non2xx": 0, "socket_errors": 0}
    if m := re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[m[3]]
        out["requests"], out["seconds"] = float(m[1]), float(m[2]) * scale
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non2xx"] = float(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = float(sum(int(g) for g in m.groups()))
    for q in ("50", "99"):
        if m := re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)", text, re.M):
            out[f"p{q}_ms"] = float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]
    return out


async def blast_single(url: str, conns: int, seconds: float, key: str | None = None) -> dict[str, float]:
    """`conns` keep-alive connections, each posting one job after another for `seconds`
    (with the API key `key`, when given)."""
    counts = {"requests": 0.0, "non2xx": 0.0, "socket_errors": 0.0}
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        pool = HttpPool(url, key)
        while time.perf_counter() < deadline:
            try:
                status, _ = await pool.request("POST", "/jobs", NOOP_BODY)
            except (OSError, asyncio.IncompleteReadError):
                counts["socket_errors"] += 1
                pool = HttpPool(url, key)
                continue
            counts["requests"] += 1
            counts["non2xx"] += not 200 <= status < 300
        await pool.close()

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(conns)))
    return {**counts, "seconds": time.perf_counter() - start}


# -- Kafka ---------------------------------------------------------------------------------


class KafkaProbe:
    """End offsets of the job topics and the workers' committed offsets (an async CM)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tps = [
            TopicPartition(t, p) for t in settings.topics.job_topics for p in range(settings.partitions)
        ]
        self._tp_set = set(self.tps)
        self._consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None)
        self._admin = AIOKafkaAdminClient(**kafka_options(settings))

    async def __aenter__(self) -> KafkaProbe:
        await self._consumer.start()
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def end_total(self) -> int:
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(self.tps)
        return sum(ends.values())

    async def committed_total(self) -> int:
        """The group's committed offsets summed; 0 until its coordinator exists."""
        try:
            got = await self._admin.list_consumer_group_offsets(self.settings.topics.workers_group)
        except KafkaError:  # no coordinator yet: the group has not committed anything
            return 0
        return sum(max(meta.offset, 0) for tp, meta in got.items() if tp in self._tp_set)


async def preload(
    settings: Settings, n: int, tick: Callable[[int], None], job_type: str = "example.noop", **fields: Any
) -> None:
    """Write `n` unique jobs (default `example.noop`; `fields` go into each envelope)
    round-robin over the priority topics; return once Kafka has acknowledged them all."""
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        prios, now_ms = Priority.ordered(), int(time.time() * 1000)
        pending: list[asyncio.Future[Any]] = []
        for i in range(n):
            job = JobEnvelope(
                id=new_job_id(), type=job_type, priority=prios[i % 3], created_at=now_ms, **fields
            )
            topic = settings.topics.jobs(job.priority)
            pending.append(
                await producer.send(topic, encode_job(job), key=job.id.encode(), headers=job_headers(job))
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                tick(i + 1)
        await asyncio.gather(*pending)
        tick(n)
    finally:
        await producer.close()


async def every_second(label: str, count: Callable[[], Awaitable[int]], stop: asyncio.Event) -> None:
    """Print `label: Ns count (rate/s)` once a second until `stop` is set."""
    start = last_t = time.perf_counter()
    last = first = await count()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        now, n = time.perf_counter(), await count()
        rate = (n - last) / max(now - last_t, 1e-9)
        say(f"{label}: {now - start:4.0f}s {n - first:>9,} ({rate:,.0f}/s)")
        last, last_t = n, now


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "single":
        print("usage: python -m bench.load single URL CONNS SECONDS", file=sys.stderr)
        return 2
    key = os.environ.get("BENCH_API_KEY") or None
    result = asyncio.run(blast_single(argv[1], int(argv[2]), float(argv[3]), key))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


__all__ = [
    "NOOP",
    "NOOP_BODY",
    "WRK_LUA",
    "HttpPool",
    "KafkaProbe",
    "blast_single",
    "every_second",
    "parse_wrk",
    "preload",
    "say",
    "wait_ready",
    "warm_up",
]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
