"""How every jobstream Kafka client connects: address, TLS and SASL, from the settings.

`kafka_options(settings)` is the one place that turns settings into aiokafka keyword
arguments; every `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient` the code
creates is built with it, so a setting added here reaches all of them.

`check_access(settings)` tells a broker that refuses us from one that is not there. aiokafka
does not: a refused SASL login, an untrusted certificate or a protocol the listener does not
speak all end as the `KafkaConnectionError` "Unable to bootstrap" that an unreachable
broker gives, and a process that retries while Kafka is down would retry those forever.
The check connects to the bootstrap brokers itself, one at a time, with the same options:

    KafkaAccessError      a broker answered and refused us; the message is one line naming
                          the setting to fix. Retrying cannot help.
    returns True          a broker accepted the login and answered a metadata request.
    returns False         no broker answered (down, unreachable, timed out): the caller's
                          usual handling of a missing Kafka applies.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from jobstream.settings import Settings

CHECK_TIMEOUT_S = 10.0  # per broker tried


class KafkaAccessError(RuntimeError):
    """A broker refused this process (login, certificate, protocol); the message is one line
    naming the setting to change. Not worth retrying."""


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for the brokers: the system's CAs unless `kafka_ssl_ca_file`, a client
    certificate when `kafka_ssl_cert_file`; hostnames are checked. Raises `KafkaAccessError`
    naming the files when they do not load."""
    key_password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_ca_file,
            certfile=settings.kafka_ssl_cert_file,
            keyfile=settings.kafka_ssl_key_file,
            password=key_password.get_secret_value() if key_password else None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise KafkaAccessError(
            "cannot load the Kafka TLS files (JOBSTREAM_KAFKA_SSL_CA_FILE, _CERT_FILE, _KEY_FILE, "
            f"_KEY_PASSWORD): {exc}"
        ) from None
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client gets: `bootstrap_servers`,
    `security_protocol`, and the SASL login and TLS context the protocol uses."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    if protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context(settings)
    return options


def _refusal(settings: Settings, where: str, exc: BaseException) -> str | None:
    """The one-line reason a broker's answer `exc` says we are refused, or None when it only
    says the broker is not there."""
    protocol = f"JOBSTREAM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return (
            f"Kafka at {where} refused the login of {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}): check JOBSTREAM_KAFKA_SASL_USERNAME and "
            "JOBSTREAM_KAFKA_SASL_PASSWORD"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"Kafka at {where} does not offer JOBSTREAM_KAFKA_SASL_MECHANISM: {exc}"
    if isinstance(exc, IllegalSaslStateError):
        return f"Kafka at {where} does not take a SASL login there: check {protocol}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"Kafka at {where}: its certificate is not trusted ({exc.verify_message}): check "
            "JOBSTREAM_KAFKA_SSL_CA_FILE"
        )
    if isinstance(exc, ssl.SSLError):
        return f"Kafka at {where}: TLS failed ({exc.reason}): check {protocol} and the listener's port"
    if isinstance(exc, ConnectionResetError) and settings.kafka_security_protocol.endswith("SSL"):
        # accepted, then reset at our TLS hello: what a listener without TLS does to it
        return (
            f"Kafka at {where}: TLS failed (reset at the handshake): check {protocol} and the listener's port"
        )
    return None


async def check_access(
    settings: Settings, timeout_s: float = CHECK_TIMEOUT_S, *, publishes_status: bool = False
) -> bool:
    """Log in to the bootstrap brokers as every client will, one at a time until one answers
    a metadata request (True); False if none answers; `KafkaAccessError` (one line naming
    the setting) when one refuses us. Each broker tried takes at most `timeout_s`.

    With `publishes_status` (the API, workers and schedulers: they choose each event's status
    partition as `crc32(job id) % STATUS_PARTITIONS`), also `KafkaAccessError` when the status
    topic has fewer partitions than that: every event for the others would be refused."""
    options = kafka_options(settings)
    options.pop("bootstrap_servers")
    for host, port, _family in collect_hosts(settings.kafka_bootstrap_servers, randomize=False):
        where = f"{host}:{port}"
        conn = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **options)
                topics = [settings.topics.status] if publishes_status else []
                answer = await conn.send(MetadataRequest(topics, allow_auto_topic_creation=False))
            if publishes_status:
                _check_status_partitions(settings, answer)
            return True
        except (OSError, KafkaError, TimeoutError) as exc:
            reason = _refusal(settings, where, exc) or _refusal(settings, where, exc.__cause__ or exc)
            if reason is not None:
                raise KafkaAccessError(reason) from None
            if conn is not None and isinstance(exc, KafkaConnectionError):
                # It took the connection and the version handshake, then hung up on the first
                # real request: what a SASL listener does to a client that did not log in.
                raise KafkaAccessError(
                    f"Kafka at {where} closed the connection before answering: does the listener "
                    f"expect a login or TLS? check JOBSTREAM_KAFKA_SECURITY_PROTOCOL="
                    f"{settings.kafka_security_protocol}"
                ) from None
        finally:
            if conn is not None:
                conn.close()
    return False


__all__ = ["KafkaAccessError", "check_access", "kafka_options", "ssl_context"]


def _check_status_partitions(settings: Settings, answer: Any) -> None:
    """`KafkaAccessError` when the status topic exists with fewer partitions than
    `settings.status_partitions` (a topic not made yet is `jobstream topics`' to make)."""
    for topic in answer.topics:
        name, partitions = topic[1], topic[-1]
        have, want = len(partitions), settings.status_partitions
        if name == settings.topics.status and topic[0] == 0 and have < want:
            raise KafkaAccessError(
                f"the status topic {name} has {have} partitions but JOBSTREAM_STATUS_PARTITIONS is {want}: "
                f"events would go to partitions it does not have; set JOBSTREAM_STATUS_PARTITIONS={have} "
                "on every process"
            )
