"""Settings, one class per process kind over a shared base.

Every setting reads an environment variable `JOBSTREAM_<NAME>`; the connection settings
also read the unprefixed `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL`. Build settings once
in `main` and pass them down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobstream.access.keys import KeyError_
from jobstream.access.ring import static_records
from jobstream.origins import AllowedOrigins, check_origins
from schemas import Topics


def min_insync_for(replication: int) -> int:
    """The default `min.insync.replicas` for a replication factor: 2 of 3 (a broker may be
    lost without refusing writes, and an acknowledged write is on two), 1 below that."""
    return 2 if replication >= 3 else 1


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem in `exc`, naming the environment variable to change; never the
    value given (it may be a password)."""
    lines = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a model validator: its message names the variables
            lines.append(message)
            continue
        name = str(error["loc"][0]).upper()
        lines.append(f"{name if name.startswith('JOBSTREAM_') else 'JOBSTREAM_' + name}: {message}")
    return lines


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`): reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """What every process needs: where Kafka and Redis are and the topic prefix."""

    model_config = SettingsConfigDict(env_prefix="JOBSTREAM_", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("JOBSTREAM_REDIS_URL", "REDIS_URL"),
        repr=False,  # may carry a password (rediss://:password@host): never in a repr
        description="redis:// or rediss:// (TLS); a password as rediss://:password@host:6379/0, "
        "a CA file as ?ssl_ca_certs=/path/ca.pem",
    )
    # Kafka security (`jobstream.kafka_security` turns these into every client's options)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = Field(None, description="CA bundle for the brokers' certificates")
    kafka_ssl_cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_key_file: Path | None = Field(None, description="its private key, if not in the cert file")
    kafka_ssl_key_password: SecretStr | None = None
    topic_prefix: str = Field("jobstream", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    partitions: int = Field(6, ge=1, le=1024, description="partitions of each job topic")
    status_partitions: int = Field(6, ge=1, le=1024)
    metadata_max_age_ms: int = Field(
        30_000, ge=1_000, description="how soon Kafka clients see a topic grow (partitions added)"
    )
    kafka_wait_s: float = Field(
        60.0, ge=0, description="how long a service waits at start for a Kafka broker to answer"
    )
    replication_factor: int | None = Field(
        None, ge=1, le=16, description="replicas of each topic; default min(3, brokers in the cluster)"
    )
    min_insync_replicas: int | None = Field(
        None, ge=1, le=16, description="replicas a write must reach; default 2 when replication is 3+, else 1"
    )
    log_level: str = "INFO"
    state_ttl_s: int = Field(7 * 86_400, ge=60, description="how long the projection keeps a job")
    cors_origins: str = Field(
        "",
        description="web pages (origins, comma-separated, or *) that may call the API and the "
        "gateway from a browser, besides their own; default none",
    )
    retry_tiers: str = Field(
        "1s,10s,1m,10m,1h",
        pattern=r"^\s*\d+(ms|s|m|h|d)\s*(,\s*\d+(ms|s|m|h|d)\s*)*$",
        description="delay tiers of the retry topics, e.g. 1s,10s,1m,10m,1h",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        return check_origins(value)

    @model_validator(mode="after")
    def _kafka_security(self) -> Self:
        """Combinations that cannot work are refused at load, naming what to set; nothing set
        is silently ignored (credentials or files given for a protocol that does not use them)."""
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        given = f"JOBSTREAM_KAFKA_SECURITY_PROTOCOL={protocol}"
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"{given} needs JOBSTREAM_KAFKA_SASL_USERNAME and JOBSTREAM_KAFKA_SASL_PASSWORD")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(
                f"JOBSTREAM_KAFKA_SASL_USERNAME/PASSWORD are set but {given} does not log in: "
                "set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
        files = {
            "JOBSTREAM_KAFKA_SSL_CA_FILE": self.kafka_ssl_ca_file,
            "JOBSTREAM_KAFKA_SSL_CERT_FILE": self.kafka_ssl_cert_file,
            "JOBSTREAM_KAFKA_SSL_KEY_FILE": self.kafka_ssl_key_file,
        }
        if not tls and (any(files.values()) or self.kafka_ssl_key_password):
            raise ValueError(
                f"JOBSTREAM_KAFKA_SSL_* files are set but {given} does not use TLS: set it to SASL_SSL or SSL"
            )
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{name}={path}: no such file")
        if self.kafka_ssl_key_file and not self.kafka_ssl_cert_file:
            raise ValueError("JOBSTREAM_KAFKA_SSL_KEY_FILE is set without JOBSTREAM_KAFKA_SSL_CERT_FILE")
        return self

    @property
    def allowed_origins(self) -> AllowedOrigins:
        return AllowedOrigins.parse(self.cors_origins)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def retry_tier_names(self) -> list[str]:
        return [t.strip() for t in self.retry_tiers.split(",") if t.strip()]

    @property
    def redis_prefix(self) -> str:
        """The hash-tagged prefix of every Redis key, so Lua scripts run on Redis Cluster."""
        return "{" + self.topic_prefix + "}"


class ServerSettings(Settings):
    """What an HTTP process (API, gateway) needs: where to listen and how to bound clients
    (`jobstream.serving` says how each bound is enforced)."""

    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout_s: float = Field(10.0, gt=0, description="time a client has to send a request's headers")
    body_timeout_s: float = Field(
        30.0, gt=0, description="time a client has to send a body after its headers"
    )
    max_connections: int = Field(2048, ge=1, description="open connections (HTTP and WebSocket) per process")
    # Access (`jobstream.access`)
    auth: Literal["off", "required"] = Field(
        "off", description="required: every request but health, metrics and documents needs an API key"
    )
    api_keys: list[dict[str, Any]] = Field(
        default_factory=list,
        repr=False,
        description="key records (JSON: id, hash, scopes, types, name) besides those in Redis;"
        " `jobstream keys create --print` makes one",
    )
    insecure: bool = Field(False, description="serve on a non-loopback address with auth off")
    auth_cache_s: float = Field(
        10.0, ge=0, description="how long a checked key is remembered (revocation lag)"
    )

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> Self:
        """With auth off, anyone who reaches the port may submit, cancel and read every job:
        only loopback, unless JOBSTREAM_INSECURE says it is meant."""
        if self.auth == "off" and not self.insecure and not is_loopback(self.host):
            raise ValueError(
                f"JOBSTREAM_HOST={self.host} with JOBSTREAM_AUTH=off would let anyone who reaches it submit, "
                "cancel and read every job: set JOBSTREAM_AUTH=required (keys: `jobstream keys create`), "
                "or JOBSTREAM_INSECURE=true if something in front of it checks access"
            )
        try:
            static_records(self.api_keys)
        except KeyError_ as exc:
            raise ValueError(f"JOBSTREAM_API_KEYS: {exc}") from None
        return self


class DelaySettings(Settings):
    """What a delay scheduler needs, in the API process or on its own (`jobstream scheduler`)."""

    scheduler_lease_ms: int = Field(
        10_000, ge=100, description="how long a claim is held before another scheduler may take it"
    )
    scheduler_batch: int = Field(1_000, ge=1, le=10_000, description="due jobs claimed per script call")
    scheduler_lookahead_ms: int = Field(
        50, ge=0, le=5_000, description="claim jobs this early, so each is produced right when due"
    )
    submit_timeout_s: float = Field(5.0, gt=0)
    schedule_lookahead_ms: int = Field(
        1_000, ge=0, le=5_000,
        description="claim recurring schedules this early: the work of a claim is done before the"
        " occurrences fall due, which then only wait to be handed to Kafka",
    )  # fmt: skip
    schedule_grace_ms: int = Field(
        10_000, ge=0, le=3_600_000,
        description="a recurring schedule's occurrence this late still fires; older ones count as"
        " missed (what happens to them: the schedule's catch_up)",
    )  # fmt: skip


class SchedulerSettings(DelaySettings):
    # 0: a due job waits for no timer (batching still happens while a request is in flight)
    linger_ms: int = Field(0, ge=0)


class ApiSettings(DelaySettings, ServerSettings):
    partition_stall_ms: int = Field(
        500,
        ge=0,
        description="a partition whose sends have waited this long gets no new keyless job until"
        " they go through (a leader moving); 0: never avoid one",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_payload_bytes: int = Field(
        256 * 1024, ge=64, description="a job's payload (each follow-up's too), as JSON"
    )
    # Kafka's default message.max.bytes is 1 MiB; the rest is headroom for what the pipeline
    # adds to a job later: each attempt's error on retry records, the dead-letter wrapper.
    max_record_bytes: int = Field(
        900 * 1024,
        ge=8 * 1024,
        le=8 * 1024 * 1024,  # the producer's max_request_size (jobstream.kafka)
        description="a job as a Kafka record: envelope with its follow-ups, headers, key",
    )
    max_batch: int = Field(10_000, ge=1)
    scheduler: bool = Field(True, description="run a delay scheduler in the API process")
    default_timeout_s: float | None = Field(None, gt=0)
    # 0: a submit waits for no timer (batching still happens while a request is in flight)
    linger_ms: int = Field(0, ge=0)
    idempotency_ttl_s: int = Field(86_400, ge=1, description="how long an Idempotency-Key is remembered")


class WorkerSettings(Settings):
    concurrency: int = Field(32, ge=1, le=10_000)
    buffer_per_partition: int = Field(512, ge=1, description="records buffered before a pause")
    aging_ms: int = Field(2_000, ge=1, description="wait that lifts a record one priority")
    drain_timeout_s: float = Field(30.0, ge=0)
    commit_interval_ms: int = Field(200, ge=1)
    done_ttl_s: int = Field(7 * 86_400, ge=60, description="how long a completed id is remembered")
    default_timeout_s: float | None = Field(None, gt=0)
    worker_id: str | None = None
    default_max_attempts: int = Field(3, ge=1, le=100, description="for jobs and handlers that set none")
    rate_limits: str = Field("", description="per job type, e.g. images.resize=50/s,mail.send=10/m")
    session_timeout_ms: int = Field(10_000, ge=500, description="how soon the group notices a dead worker")
    # Static membership (Kafka's group.instance.id): a worker restarted under the same id
    # within session_timeout_ms gets its partitions back and nobody else's move; the price is
    # that a worker stopped for good holds its partitions idle until the session times out
    # (it does not leave the group). Unset: every start and stop rebalances at once.
    instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,128}$")
    linger_ms: int = Field(0, ge=0, description="0 keeps status events ahead of retry records")
    metrics_port: int | None = Field(
        None, ge=0, le=65_535, description="serve /metrics here (0: any free port)"
    )
    metrics_host: str = "127.0.0.1"


class GatewaySettings(ServerSettings):
    port: int = 8001
    client_queue_max: int = Field(10_000, ge=1, description="events a client may lag before it is closed")
    client_queue_bytes: int = Field(
        8 << 20,
        ge=4096,
        description="bytes of frames (events, replies, errors) queued for a client before it is closed",
    )
    client_messages_per_s: float = Field(
        20.0, gt=0, description="messages a client may send per second (after its burst) before it is closed"
    )
    client_message_burst: int = Field(100, ge=1, description="messages a client may send at once")
    dashboard_api_url: str = Field(
        "http://127.0.0.1:8000",
        description="the API as the dashboard's browsers reach it (the API must allow this gateway's origin)",
    )
    ws_token_ttl_s: int = Field(
        60, ge=5, le=3600, description="how long a WebSocket token from POST /ws-token is good"
    )
    projector: bool = Field(True, description="run the job-state projector in this process")
