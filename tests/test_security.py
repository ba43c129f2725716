"""Kafka security from settings (SASL/SCRAM, TLS options) and Redis with a password: what the
settings accept, what every client is given, and the pipeline against a broker that takes
only SCRAM logins; bad credentials end each command with one line naming the setting."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from jobstream.cli import procs
from jobstream.cli.stack import KafkaBroker, RedisServer
from jobstream.kafka_security import KafkaAccessError, check_access, kafka_options
from jobstream.settings import Settings, settings_problems
from tests.conftest import MS, ROOT, SCRAM_PASSWORD, SCRAM_USER, make_tls
from tests.pipeline import run_pipeline

SASL = {
    "JOBSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "JOBSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "JOBSTREAM_KAFKA_SASL_USERNAME": SCRAM_USER,
    "JOBSTREAM_KAFKA_SASL_PASSWORD": SCRAM_PASSWORD,
}
CLI = [sys.executable, "-m", "jobstream.cli"]


def problems(**values: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    return settings_problems(caught.value)


def test_sasl_without_credentials_is_refused_naming_both_variables() -> None:
    """A SASL protocol with no username or password fails at load, naming what to set."""
    assert problems(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u") == [
        "JOBSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs JOBSTREAM_KAFKA_SASL_USERNAME and "
        "JOBSTREAM_KAFKA_SASL_PASSWORD"
    ]


def test_settings_that_would_be_ignored_are_refused() -> None:
    """Credentials without a SASL protocol, or TLS files without TLS, are refused, not ignored."""
    (line,) = problems(kafka_sasl_username="u", kafka_sasl_password="p")
    assert "JOBSTREAM_KAFKA_SASL_USERNAME/PASSWORD are set" in line and "SASL_SSL" in line
    (line,) = problems(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
                       kafka_sasl_password="p", kafka_ssl_ca_file=__file__)  # fmt: skip
    assert "does not use TLS" in line


def test_a_missing_file_and_a_bad_value_are_named() -> None:
    """A TLS file that does not exist names its variable and path; a bad protocol names its variable."""
    assert problems(kafka_security_protocol="SSL", kafka_ssl_ca_file="/nonexistent/ca.pem") == [
        "JOBSTREAM_KAFKA_SSL_CA_FILE=/nonexistent/ca.pem: no such file"
    ]
    (line,) = problems(kafka_security_protocol="SASL")
    assert line.startswith("JOBSTREAM_KAFKA_SECURITY_PROTOCOL: Input should be")


def test_passwords_are_never_shown() -> None:
    """Neither a problem report nor the settings' repr shows the SASL or the Redis password."""
    lines = problems(
        kafka_security_protocol="SASL_SSL", kafka_sasl_password="hunter2", kafka_sasl_mechanism="MD5"
    )
    assert lines and not any("hunter2" in line for line in lines)
    s = Settings(
        redis_url="rediss://:hunter2@redis.example:6380/0",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password="hunter2",
    )
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)


def test_kafka_options_by_protocol(tmp_path: Path) -> None:
    """PLAINTEXT adds nothing to the address; SASL_SSL gives the login and a TLS context that
    trusts the CA file and checks hostnames."""
    assert kafka_options(Settings(kafka_bootstrap_servers="k1:9092,k2:9092")) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }
    ca, _ = make_tls(tmp_path)
    options = kafka_options(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="svc",
            kafka_sasl_password="pw",
            kafka_ssl_ca_file=ca,
        )
    )
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "jobstream test CA"),),)]


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    """A CA file that does not load fails when the clients are built, naming the TLS settings."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(KafkaAccessError, match="JOBSTREAM_KAFKA_SSL_CA_FILE"):
        kafka_options(Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=bad))


def test_every_kafka_client_is_built_from_kafka_options() -> None:
    """No code but `jobstream.kafka_security` passes `bootstrap_servers=` to an aiokafka client,
    so every client gets the security settings."""
    offenders = []
    for folder in (
        "schemas",
        "producer",
        "deadletters",
        "scheduler",
        "consumer",
        "gateway",
        "jobstream",
        "bench",
    ):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "kafka_security.py" and re.search(r"\bbootstrap_servers=", path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 60) -> tuple[int, list[str]]:
    """Run a `jobstream` command to its end: its exit code and its output lines."""
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s)
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def test_bad_settings_end_a_command_with_one_line_per_problem() -> None:
    """`jobstream topics` with SASL and no credentials exits 2 with one line, no traceback."""
    env = {**os.environ, "JOBSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    code, lines = run_cli(["topics"], env)
    assert code == 2 and lines == [
        "jobstream topics: JOBSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
        "JOBSTREAM_KAFKA_SASL_USERNAME and JOBSTREAM_KAFKA_SASL_PASSWORD"
    ]


def run_every_command(env: dict[str, str], timeout_s: float = 60) -> dict[str, tuple[int, list[str]]]:
    """Start topics, api, worker, gateway and scheduler at once; each one's exit code and
    output lines, failing if one still runs after `timeout_s`."""
    commands = {
        "topics": ["topics"],
        "api": ["api", "--port", str(procs.free_port())],
        "worker": ["worker", "consumer.examples:app"],
        "gateway": ["gateway", "--port", str(procs.free_port())],
        "scheduler": ["scheduler"],
    }
    running = {
        name: subprocess.Popen(
            [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, args in commands.items()
    }
    ended = {}
    for name, proc in running.items():
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"{name} still running after {timeout_s} s:\n{out}") from None
        ended[name] = (proc.returncode, [line for line in out.splitlines() if line.strip()])
    return ended


def test_no_broker_answering_ends_each_command_with_one_line() -> None:
    """An unreachable bootstrap list: `topics` exits 1 at once, and each service once it has
    waited `KAFKA_WAIT_S` (2 s here), with one line naming the setting, no traceback."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{procs.free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{procs.free_port()}/0",
        "JOBSTREAM_KAFKA_WAIT_S": "2",
    }
    env.pop("JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS", None)
    for name, (code, lines) in run_every_command(env).items():
        assert code == 1, (name, lines)
        assert lines == [
            f"jobstream {name}: no Kafka broker answers at {env['KAFKA_BOOTSTRAP_SERVERS']}: check "
            "JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS"
        ], (name, lines)


def test_a_status_topic_smaller_than_the_setting_stops_the_publishers_with_one_line(
    env: dict[str, str], settings: Settings
) -> None:
    """The status topic has 3 partitions and STATUS_PARTITIONS says 6: the API, a worker and a
    scheduler (each picks an event's partition by that number) stop at start with one line
    saying what to set, rather than answer 500 for the jobs whose events would go nowhere."""
    wrong = {**env, "JOBSTREAM_STATUS_PARTITIONS": "6"}
    commands = {
        "api": ["api", "--port", str(procs.free_port())],
        "worker": ["worker", "consumer.examples:app"],
        "scheduler": ["scheduler"],
    }
    for name, args in commands.items():
        done = subprocess.run([*CLI, *args], env=wrong, capture_output=True, text=True, timeout=60)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1, (name, done.stderr)
        assert lines[0].startswith(
            f"jobstream {name}: the status topic {settings.topics.status} has 3 partitions"
        )
        assert "JOBSTREAM_STATUS_PARTITIONS=3" in lines[0], lines[0]


def scram_env(broker: KafkaBroker, prefix: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap,
        "JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap,
        "REDIS_URL": redis_url,
        "JOBSTREAM_REDIS_URL": redis_url,
        "JOBSTREAM_TOPIC_PREFIX": prefix,
        "JOBSTREAM_PARTITIONS": "3",
        "JOBSTREAM_STATUS_PARTITIONS": "3",
        **SASL,
        **extra,
    }


async def test_check_access_tells_refusal_from_absence(scram_kafka: KafkaBroker) -> None:
    """The right login passes; a wrong password, no login on the SCRAM listener and a login on
    the plaintext one are refusals naming the setting; no broker at all is only False."""
    good = Settings(kafka_bootstrap_servers=scram_kafka.sasl_bootstrap, **lower(SASL))
    assert await check_access(good) is True
    wrong = good.model_copy(update={"kafka_sasl_password": SecretStr("wrong")})
    with pytest.raises(
        KafkaAccessError, match=r"refused the login of 'jobstream' .*JOBSTREAM_KAFKA_SASL_PASSWORD"
    ):
        await check_access(wrong)
    plain = Settings(kafka_bootstrap_servers=scram_kafka.sasl_bootstrap)
    with pytest.raises(KafkaAccessError, match="JOBSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"):
        await check_access(plain)
    login_on_plaintext = good.model_copy(update={"kafka_bootstrap_servers": scram_kafka.bootstrap})
    with pytest.raises(KafkaAccessError, match="JOBSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"):
        await check_access(login_on_plaintext)
    absent = good.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{procs.free_port()}"})
    assert await check_access(absent) is False


def lower(env: dict[str, str]) -> dict[str, Any]:
    return {k.removeprefix("JOBSTREAM_").lower(): v for k, v in env.items()}


def run_one_job(env: dict[str, str], logs: Path) -> None:
    """`jobstream topics`, then a job submitted to an API process and run by a worker process
    to `completed`, all with `env`."""
    code, lines = run_cli(["topics"], env)
    assert code == 0, lines
    assert any(line.startswith("created 11 topics") for line in lines), lines
    with run_pipeline(env, logs, workers=1) as p:
        r = httpx.post(f"{p.api}/jobs", json={"type": "example.echo", "payload": {"over": "sasl"}})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        state: dict[str, object] = {}
        deadline = time.monotonic() + 30_000 * MS
        while state.get("state") != "completed" and time.monotonic() < deadline:
            time.sleep(0.1)
            state = httpx.get(f"{p.api}/jobs/{job_id}").json()
        assert state.get("state") == "completed", state
        assert state.get("result") == {"over": "sasl"}


@pytest.mark.slow
def test_pipeline_over_scram_with_a_redis_password(
    scram_kafka: KafkaBroker, prefix: str, tmp_path: Path
) -> None:
    """Topics created, a job submitted to the API process and run by a worker process to
    `completed`, every Kafka client logged in with SCRAM and Redis behind a password; no
    password appears in any log."""
    redis = RedisServer(tmp_path / "redis", procs.free_port(), password="redis-test-secret")
    redis.start()
    try:
        run_one_job(scram_env(scram_kafka, prefix, redis.url), tmp_path)
    finally:
        redis.stop()
    for log in tmp_path.glob("*.log"):
        text = log.read_text()
        assert SCRAM_PASSWORD not in text and "redis-test-secret" not in text, log


@pytest.mark.slow
def test_pipeline_over_scram_and_tls(
    scram_tls_kafka: tuple[KafkaBroker, Path], private_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """The same with SASL_SSL: every Kafka client logs in with SCRAM over TLS, trusting the
    broker's certificate through JOBSTREAM_KAFKA_SSL_CA_FILE."""
    broker, ca = scram_tls_kafka
    env = scram_env(
        broker, prefix, private_redis.url,
        JOBSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_SSL", JOBSTREAM_KAFKA_SSL_CA_FILE=str(ca),
    )  # fmt: skip
    run_one_job(env, tmp_path)


async def test_check_access_names_tls_problems(
    scram_tls_kafka: tuple[KafkaBroker, Path], scram_kafka: KafkaBroker
) -> None:
    """Over TLS: the right CA passes; the system's CAs do not trust the broker (named: the CA
    file); TLS to a listener without it is named (the protocol)."""
    broker, ca = scram_tls_kafka
    good = Settings(
        kafka_bootstrap_servers=broker.sasl_bootstrap,
        **{**lower(SASL), "kafka_security_protocol": "SASL_SSL", "kafka_ssl_ca_file": ca},
    )
    assert await check_access(good) is True
    with pytest.raises(KafkaAccessError, match=r"certificate is not trusted .* JOBSTREAM_KAFKA_SSL_CA_FILE"):
        await check_access(good.model_copy(update={"kafka_ssl_ca_file": None}))
    to_plaintext = good.model_copy(update={"kafka_bootstrap_servers": scram_kafka.sasl_bootstrap})
    with pytest.raises(
        KafkaAccessError,
        match=r"TLS failed \(reset at the handshake\): check JOBSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
    ):
        await check_access(to_plaintext)


@pytest.mark.slow
def test_a_wrong_password_ends_each_command_with_one_line(scram_kafka: KafkaBroker, prefix: str) -> None:
    """With a wrong SASL password, topics, api, worker, gateway and scheduler each exit 2
    within seconds with one line naming the settings, no traceback, no retry loop."""
    env = scram_env(
        scram_kafka, prefix, f"redis://127.0.0.1:{procs.free_port()}/0",
        JOBSTREAM_KAFKA_SASL_PASSWORD="not-the-password",
    )  # fmt: skip
    started = time.monotonic()
    for name, (code, lines) in run_every_command(env).items():
        assert code == 2, (name, lines)
        assert lines == [
            f"jobstream {name}: Kafka at {scram_kafka.sasl_bootstrap} refused the login of 'jobstream' "
            "(SCRAM-SHA-512): check JOBSTREAM_KAFKA_SASL_USERNAME and JOBSTREAM_KAFKA_SASL_PASSWORD"
        ], (name, lines)
    assert time.monotonic() - started < 60
