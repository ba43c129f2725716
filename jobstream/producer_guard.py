"""A Kafka producer that replaces itself when it can no longer send.

An idempotent producer numbers its batches per partition, and the broker takes only the
next number. aiokafka assigns the numbers when a batch leaves, so a batch the broker
refuses (a record over `message.max.bytes`) or loses (a broker restarted under load)
leaves a gap: every later batch to that partition fails with `OutOfOrderSequenceNumber`,
forever, while metadata requests still succeed (aiokafka issue #1017; the Java client
bumps its epoch, librdkafka calls it fatal). The only remedy is a new producer, with a new
producer id whose numbers start again at zero.

`GuardedProducer` wraps the aiokafka producer behind the same `send()` and replaces it:

- when any send fails once Kafka has answered (with idempotence every such failure leaves
  a gap; errors `send()` raises itself, such as a record over `max_request_size`, do not,
  and leave the producer as it is);
- when its sender task has died, or when sends have waited `stuck_after_s` without a single
  acknowledgement and the cluster has answered metadata requests for half of that
  ("stuck failing"; a broker that is down or just back is not a broken producer).

What callers can rely on:

- Nothing acknowledged is touched: a record's future succeeds only once Kafka has it.
- Nothing is dropped silently: every record handed to the broken producer resolves, with
  Kafka's acknowledgement (its healthy partitions get `grace_s` to finish) or with an
  error (`ProducerReplaced`), and the caller decides whether to send it again.
- No reordering by the swap: new sends wait until the old producer has settled, so a
  record sent later never overtakes an earlier one that Kafka may still take. A send
  waits at most `wait_s` for the new producer, then raises `ProducerUnavailable`.
- `problem` says what is wrong while a replacement is under way (for `/readyz`).

Costs: one method call and one done-callback per record; nothing per record talks to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

log = logging.getLogger("jobstream.kafka.producer")

Factory = Callable[[], Any]  # builds an unstarted AIOKafkaProducer


class ProducerReplaced(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """The record was handed to a producer that broke before Kafka acknowledged it; it may
    or may not be in Kafka. Send it again (on the replacement) or fail it to its caller."""

    retriable = True


class ProducerUnavailable(KafkaConnectionError):  # type: ignore[misc]
    """No working producer within the wait: the old one broke and a new one has not started
    (Kafka unreachable)."""


class GuardedProducer:
    """An aiokafka producer (from `factory`) behind `send()`, replaced when it breaks; see
    the module docstring. `start()` once; `stop()` is idempotent and bounded."""

    def __init__(
        self,
        factory: Factory,
        *,
        name: str = "producer",
        grace_s: float = 5.0,
        wait_s: float = 5.0,
        stuck_after_s: float = 30.0,
        watch_interval_s: float = 1.0,
    ) -> None:
        self._factory = factory
        self.name = name
        self.grace_s = grace_s
        self.wait_s = wait_s
        self.stuck_after_s = stuck_after_s
        self.watch_interval_s = watch_interval_s
        self._current: Any | None = None  # None while a replacement is under way
        self._last: Any | None = None  # the newest producer, working or not (for `client`)
        self._ready = asyncio.Event()
        self._swap: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._pending = 0  # records handed over and not yet settled
        self._progress_at = time.monotonic()  # last acknowledgement, or when waiting began
        self._answering_since: float | None = None  # metadata answered since, while acks lag
        self.problem: str | None = None
        self.replacements = 0

    async def __aenter__(self) -> GuardedProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the first producer; raises (having closed it) if Kafka cannot be bootstrapped."""
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._install(producer)
        self._watch = asyncio.create_task(self._watchdog(), name=f"{self.name}-watchdog")

    async def stop(self) -> None:
        """Flush and stop the producer (and a replacement under way). Idempotent."""
        if self._closing:
            return
        self._closing = True
        for task in (self._watch, self._swap):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._current is not None:
            await self._current.stop()
        self._current = None
        self._ready.set()  # wake waiting senders; they find no producer and raise

    @property
    def client(self) -> Any:
        """The current producer's cluster client (metadata, partition counts)."""
        assert self._last is not None, "start() first"
        return self._last.client

    async def partitions_for(self, topic: str) -> Any:
        return await self.client._wait_on_metadata(topic)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Hand a record over; the returned future resolves once Kafka acknowledged it."""
        producer = self._current
        if producer is None:
            producer = await self._wait_for_producer()
        fut: asyncio.Future[Any] = await producer.send(
            topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms, headers=headers
        )
        if self._pending == 0:
            self._progress_at = time.monotonic()
        self._pending += 1
        fut.add_done_callback(functools.partial(self._settled, producer))
        return fut

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
        timestamp_ms: int | None = None, headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:  # fmt: skip
        """`send()` and wait for Kafka's acknowledgement: one round trip, for the odd record."""
        return await (await self.send(topic, value, key, partition, timestamp_ms, headers))

    async def flush(self) -> None:
        """Wait until every record handed to the current producer has settled."""
        if self._current is not None:
            await self._current.flush()

    # -- internals ---------------------------------------------------------------------

    def _install(self, producer: Any) -> None:
        self._current = self._last = producer
        self._progress_at = time.monotonic()
        self.problem = None
        self._ready.set()

    async def _wait_for_producer(self) -> Any:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), self.wait_s)
        if self._current is None:
            why = "the producer is closed" if self._closing else self.problem
            raise ProducerUnavailable(f"no Kafka producer can send: {why}")
        return self._current

    def _settled(self, producer: Any, fut: asyncio.Future[Any]) -> None:
        self._pending -= 1
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self._progress_at = time.monotonic()
        elif producer is self._current:
            self._replace(producer, _describe(exc))

    def _replace(self, broken: Any, why: str) -> None:
        """Stop sending to `broken` and start its replacement in the background."""
        if self._closing or broken is not self._current:
            return  # already being replaced
        self._current = None
        self._ready.clear()
        self.problem = f"the Kafka producer broke ({why}); replacing it"
        log.warning("producer broken name=%s error=%s; replacing it", self.name, why)
        self._swap = asyncio.create_task(self._replace_with_new(broken, why), name=f"{self.name}-swap")

    async def _replace_with_new(self, broken: Any, why: str) -> None:
        starting = asyncio.create_task(self._start_new(why))
        try:
            try:
                # Its healthy partitions may still finish; what is left fails back to callers.
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(broken.flush()), self.grace_s)
                failed = _fail_pending(broken, ProducerReplaced(f"the producer broke ({why})"))
            finally:
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(broken.stop(), self.grace_s)
            producer = await starting
        except BaseException:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            raise
        self.replacements += 1
        self._install(producer)
        log.warning("producer replaced name=%s after=%s batches_failed_back=%d", self.name, why, failed)

    async def _start_new(self, why: str) -> Any:
        """A started producer, retrying with capped backoff while Kafka is unreachable."""
        delay = 0.2
        while True:
            producer = self._factory()
            try:
                await producer.start()
                return producer
            except asyncio.CancelledError:
                await producer.stop()
                raise
            except Exception as exc:
                await producer.stop()
                self.problem = f"the Kafka producer broke ({why}); a new one cannot start: {_describe(exc)}"
                log.warning("producer start failed name=%s retry_in=%.1fs error=%s", self.name, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            producer = self._current
            if producer is None:
                continue
            sender = getattr(getattr(producer, "_sender", None), "sender_task", None)
            if sender is not None and sender.done():
                err = None if sender.cancelled() else sender.exception()
                self._replace(producer, f"its sender stopped: {_describe(err) if err else 'cancelled'}")
                continue
            now = time.monotonic()
            waited = now - self._progress_at
            if not self._pending or waited < min(5.0, self.stuck_after_s / 2):
                self._answering_since = None
                continue
            try:
                answers = bool(await producer.client.force_metadata_update())
            except Exception:
                answers = False
            if not answers:  # Kafka is down: a new producer would not help
                self._answering_since = None
            elif self._answering_since is None:
                self._answering_since = now
            elif waited > self.stuck_after_s and now - self._answering_since > self.stuck_after_s / 2:
                # Acks may lag a broker's return by a few seconds (leaders moving back), not this long.
                self._replace(producer, f"no acknowledgement for {waited:.0f}s while the cluster answers")


_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException, InvalidTimestampError)


def refused_record(exc: BaseException | None) -> bool:
    """True when Kafka (or the client, before sending) refused the record itself: sending it
    again can never succeed. Any other failure may pass on a retry."""
    return isinstance(
        exc,
        MessageSizeTooLargeError | RecordListTooLargeError | CorruptRecordException | InvalidTimestampError,
    )


def _fail_pending(producer: Any, exc: BaseException) -> int:
    """Fail every batch `producer` still holds (aiokafka has no public call for it); how many."""
    acc = producer._message_accumulator
    held = sum(len(b) for b in acc._batches.values()) + len(acc._pending_batches)
    acc.fail_all(exc)
    return int(held)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
