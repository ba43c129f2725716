"""The Grafana dashboard (deploy/grafana/jobstream.json) queries only metrics the API, the
gateway and the workers export, and the monitoring profile provisions it."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobstream.cli import procs
from jobstream.settings import Settings
from tests.pipeline import spawn_service

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "jobstream.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def queried() -> set[str]:
    """Every metric family a panel's query names (histogram and counter suffixes removed)."""
    names: set[str] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bjobstream_[a-z_]+", target["expr"]):
                for suffix in _SUFFIXES:
                    name = name.removesuffix(suffix)
                names.add(name)
    return names


def test_the_monitoring_profile_provisions_the_dashboard() -> None:
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"]}
    provider = yaml.safe_load((ROOT / "deploy/grafana/dashboards.yml").read_text())["providers"][0]
    assert Path(mounts["./deploy/grafana/jobstream.json"]).parent == Path(provider["options"]["path"])
    assert mounts["./deploy/grafana/dashboards.yml"].startswith("/etc/grafana/provisioning/dashboards/")
    assert len(queried()) >= 12


async def test_every_metric_the_dashboard_queries_is_exported(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """Scrape an API, a gateway and a worker that ran, failed and fired jobs: every family
    the dashboard's queries name is among what they export."""
    worker_port = procs.free_port()
    env = {**env, "JOBSTREAM_DEFAULT_MAX_ATTEMPTS": "1"}
    api = spawn_service("api", env, tmp_path / "api.log")
    gateway = spawn_service("gateway", env, tmp_path / "gw.log")
    cmd = [
        sys.executable,
        "-m",
        "jobstream.cli",
        "worker",
        "consumer.examples:app",
        "--metrics-port",
        str(worker_port),
    ]
    worker = procs.spawn(cmd, env=env, log=tmp_path / "worker.log")
    try:
        api.wait_ready()
        gateway.wait_ready()
        async with httpx.AsyncClient(timeout=30) as http:
            for job in (
                {"type": "example.echo"},
                {"type": "example.fail"},
                {"type": "example.echo", "delay_ms": 50},
            ):
                assert (await http.post(f"{api.http}/jobs", json=job)).status_code == 202
            exported: set[str] = set()
            for _ in range(120):  # until the worker has run all three (its metrics say so)
                exported = set()
                for url in (
                    f"{api.http}/metrics",
                    f"{gateway.http}/metrics",
                    f"http://127.0.0.1:{worker_port}/metrics",
                ):
                    try:
                        text = (await http.get(url)).text
                    except httpx.HTTPError:
                        continue
                    exported |= {f.name for f in text_string_to_metric_families(text) if f.samples}
                if queried() <= exported:
                    break
                await asyncio.sleep(0.5)
        assert queried() <= exported, f"queried but not exported: {sorted(queried() - exported)}"
    finally:
        for proc in (worker, gateway.proc, api.proc):
            procs.stop(proc, grace_s=30)
