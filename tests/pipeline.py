"""The whole pipeline as separate processes (API, gateway, workers) for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from jobstream.cli import procs
from jobstream.settings import ApiSettings, GatewaySettings, Settings, WorkerSettings


@dataclass
class Pipeline:
    api: str
    gateway: str
    ws: str
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_proc: subprocess.Popen[bytes] | None = None
    gateway_proc: subprocess.Popen[bytes] | None = None


@dataclass
class ServiceProcess:
    """An API or gateway process of the test's deployment."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self) -> None:
        _wait_ready(self.http, self.proc, self.log)


def spawn_service(kind: str, env: dict[str, str], log: Path, port: int | None = None) -> ServiceProcess:
    """Start `jobstream api` or `jobstream gateway` (not waited for: `wait_ready()`)."""
    port = port if port is not None else procs.free_port()
    cmd = [sys.executable, "-m", "jobstream.cli", kind, "--port", str(port)]
    return ServiceProcess(procs.spawn(cmd, env=env, log=log), port, log)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited with {proc.returncode}:\n{procs.tail(log)}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready after {timeout_s}s:\n{procs.tail(log)}")
        time.sleep(0.1)


@contextmanager
def run_pipeline(
    env: dict[str, str], logs: Path, workers: int = 2, concurrency: int = 32
) -> Iterator[Pipeline]:
    """Start API, gateway and workers; stop them all (SIGTERM) on exit."""
    cli = [sys.executable, "-m", "jobstream.cli"]
    children: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        api = spawn_service("api", env, logs / "api.log")
        children.append((api.proc, api.log))
        gw = spawn_service("gateway", env, logs / "gateway.log")
        children.append((gw.proc, gw.log))
        p = Pipeline(api.http, gw.http, gw.ws, logs, api_proc=api.proc, gateway_proc=gw.proc)
        for i in range(workers):
            log = logs / f"worker-{i}.log"
            w = procs.spawn(
                [*cli, "worker", "consumer.examples:app", "--concurrency", str(concurrency)], env=env, log=log
            )
            children.append((w, log))
            p.workers.append(w)
        api.wait_ready()
        gw.wait_ready()
        yield p
    finally:
        for proc, _ in reversed(children):
            procs.stop(proc, grace_s=30)


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API (with its schedulers), a worker of the example handlers and the gateway (whose
    projector feeds lookups), all in this process; a client of the API."""
    from consumer import Worker
    from consumer.examples import app as examples
    from gateway import create_app as create_gateway
    from producer import create_app
    from tests.helpers import asgi_client

    worker = WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000})
    gateway = create_gateway(GatewaySettings(**settings.model_dump()))
    app = create_app(ApiSettings(**settings.model_dump()))
    async with Worker(examples, worker), asgi_client(gateway), asgi_client(app) as client:
        yield client
