"""docker-compose.yml exposes nothing beyond this machine by default, and Grafana has a login."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import yaml

from tests.conftest import ROOT


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def interpolate(value: str, env: dict[str, str]) -> str:
    """What Compose makes of `${VAR:-default}` and `$$` (the forms the file uses)."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], value)
    return value.replace("$$", "$")


def test_every_port_is_published_on_loopback_by_default() -> None:
    """Each published port binds 127.0.0.1 unless JOBSTREAM_PUBLISH_ADDR says otherwise."""
    published = {name: svc["ports"] for name, svc in compose()["services"].items() if "ports" in svc}
    assert {"api", "gateway", "kafka", "grafana", "prometheus"} <= published.keys()
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
