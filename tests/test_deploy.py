"""docker-compose.yml exposes nothing beyond this machine by default, and Grafana has a login."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import yaml

from tests.conftest import ROOT


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return doc


def interpolate(value: str, env: dict[str, str]) -> str:
    """What Compose makes of `${VAR:-default}` and `$$` (the forms the file uses)."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], value)
    return value.replace("$$", "$")


def test_every_port_is_published_on_loopback_by_default() -> None:
    """Each published port binds 127.0.0.1 unless JOBSTREAM_PUBLISH_ADDR says otherwise,
    the cluster override's too."""
    published = {
        name: svc["ports"]
        for doc in (compose(), compose("docker-compose.cluster.yml"))
        for name, svc in doc["services"].items()
        if "ports" in svc
    }
    assert {"api", "gateway", "kafka", "kafka-2", "kafka-3", "grafana", "prometheus"} <= published.keys()
    for name, ports in published.items():
        for port in ports:
            assert interpolate(port, {}).startswith("127.0.0.1:"), (name, port)
            assert interpolate(port, {"JOBSTREAM_PUBLISH_ADDR": "0.0.0.0"}).startswith("0.0.0.0:")


def test_grafana_has_no_anonymous_admin_and_needs_a_password() -> None:
    """Anonymous Grafana users are viewers at most, and Grafana will not start until
    GRAFANA_ADMIN_PASSWORD is set to something other than its default 'admin'."""
    grafana = compose()["services"]["grafana"]
    env = grafana["environment"]
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer") == "Viewer"
    shell, flag, script, *args = grafana["entrypoint"]
    for password, refused in ((None, True), ("admin", True), ("s3cret-enough", False)):
        given = {} if password is None else {"GRAFANA_ADMIN_PASSWORD": password}
        run_env = {"PATH": os.environ["PATH"], "GF_SECURITY_ADMIN_PASSWORD": interpolate(
            env["GF_SECURITY_ADMIN_PASSWORD"], given)}  # fmt: skip
        done = subprocess.run(
            [shell, flag, interpolate(script, {}), *args], env=run_env, capture_output=True, text=True
        )
        if refused:
            assert done.returncode == 1 and "GRAFANA_ADMIN_PASSWORD" in done.stderr
        else:  # it went on to start Grafana (absent here: /run.sh is the image's)
            assert done.returncode == 127 and "run.sh" in done.stderr


def test_the_cluster_override_is_three_voters_that_every_client_knows() -> None:
    """docker-compose.cluster.yml: three nodes, ids 1-3, one quorum naming each by its
    service, replication 3 with min.insync.replicas 2, and every jobstream service given all
    three as bootstrap servers and waiting for all three."""
    base, cluster = compose()["services"], compose("docker-compose.cluster.yml")["services"]
    nodes = {name: svc["environment"] for name, svc in cluster.items() if name.startswith("kafka")}
    assert sorted(str(env["KAFKA_NODE_ID"]) for env in nodes.values()) == ["1", "2", "3"]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes.values()}
    assert voters == {",".join(f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in sorted(nodes.items()))}
    for name, env in nodes.items():
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"PLAINTEXT://{name}:9092,")
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3 and env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
    apps = [name for name, svc in base.items() if svc.get("image") == "jobstream:latest"]
    assert {"api", "gateway", "worker", "topics"} <= set(apps)
    for name in apps:
        bootstrap = cluster[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")
        assert sorted(b.split(":")[0] for b in bootstrap) == sorted(nodes), name
        assert set(cluster[name]["depends_on"]) == set(nodes), name
