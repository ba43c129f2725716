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

- A record's future succeeds only once Kafka has it.
- One refused record damages no other: records the broker turned away because of the
  gap (`OutOfOrderSequenceNumber` and the other sequence errors: certainly not written)
  are sent again on the replacement, in their original order, before any new record; a
  batch refused as too large is sent again one record per batch, so only a record too
  large on its own fails (`MessageSizeTooLargeError`).
- Nothing is dropped silently: every record resolves, with Kafka's acknowledgement or an
  error. What the broken producer still held after `grace_s` fails with
  `ProducerReplaced` (it may or may not be written; the caller decides).
- No reordering by the swap: new sends wait until the old producer has settled, so a
  record sent later never overtakes an earlier one that Kafka may still take. A send
  waits at most `wait_s` for the new producer, then raises `ProducerUnavailable`.
- `problem` says what is wrong while a replacement is under way (for `/readyz`).

Costs: a done-callback per record (per batch for a partition's long run in `send_all`),
and a future per record only through `send()` (the hot paths use `send_all` or
`send_notify`); nothing per record talks to Kafka.

Why one module: the swap, the resend queue and the watchdog share one piece of state (the
current producer and the records it holds), and each is a few lines around it; split, the
invariant "no record overtakes one Kafka may still take" would span files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import (
    CorruptRecordException,
    InvalidProducerEpoch,
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordListTooLargeError,
    UnknownProducerId,
)

from jobstream.futures import describe
from jobstream.lifecycle import Lifecycle

log = logging.getLogger("jobstream.kafka.producer")

Factory = Callable[[], Any]  # builds an unstarted AIOKafkaProducer
Headers = list[tuple[str, bytes]]
# topic, value, key, partition, headers
SendRecord = tuple[str, bytes, bytes | None, int | None, Headers | None]
BATCH_RUN = 16  # records of a `send_all` to one partition from which they get batches of their own
# a larger record goes through `send()`, which refuses one over max_request_size without
# sending it (a batch would take it, and the broker's refusal would cost a new producer)
BATCH_RECORD_MAX = 256 * 1024
MAX_RESENDS = 3  # a record failed by this many broken producers in a row fails to its caller
# the broker refused the batch for its sequence: it wrote none of it
_NOT_WRITTEN = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class SendGroup:
    """The outcomes of records handed over together (`send_all`): `done` resolves once
    every one has settled; `errors[i]` is then None (Kafka has record i) or why not. One
    future for the lot: on the hot path that costs less than a future per record."""

    __slots__ = ("done", "errors", "left")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.errors: list[BaseException | None] = [_UNSETTLED] * n
        self.left = n
        if n == 0:
            self.done.set_result(None)

    @classmethod
    def failed(cls, loop: asyncio.AbstractEventLoop, n: int, exc: BaseException) -> SendGroup:
        """A group of `n` records none of which could be handed over: each failed with `exc`."""
        group = cls(loop, n)
        for i in range(n):
            group._settle(i, exc)
        return group

    def settled(self, i: int) -> bool:
        return self.errors[i] is not _UNSETTLED

    def _settle(self, i: int, exc: BaseException | None) -> None:
        if self.errors[i] is not _UNSETTLED:
            return
        self.errors[i] = exc
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)


_UNSETTLED = KafkaError("not settled yet")
Settled = Callable[[BaseException | None], None]


class _Notify:
    """A `send_notify()` record's outcome: its callback, called once."""

    __slots__ = ("callback", "fired")

    def __init__(self, callback: Settled) -> None:
        self.callback = callback
        self.fired = False

    def fire(self, exc: BaseException | None) -> None:
        if not self.fired:
            self.fired = True
            self.callback(exc)


Sink = asyncio.Future[Any] | tuple[SendGroup, int] | _Notify  # where a record's outcome goes


def _sink_done(sink: Sink) -> bool:
    if isinstance(sink, tuple):
        return sink[0].settled(sink[1])
    if isinstance(sink, _Notify):
        return sink.fired
    return sink.done()


def _resolve(sink: Sink, exc: BaseException | None, result: Any = None) -> None:
    if isinstance(sink, tuple):
        sink[0]._settle(sink[1], exc)
    elif isinstance(sink, _Notify):
        sink.fire(exc)
    elif not sink.done():
        if exc is None:
            sink.set_result(result)
        else:
            sink.set_exception(exc)


class _Record:
    """A record handed to `send()`, kept until it settles so it can be sent again."""

    __slots__ = (
        "alone",
        "headers",
        "key",
        "partition",
        "sends",
        "seq",
        "sink",
        "timestamp_ms",
        "topic",
        "value",
    )

    def __init__(
        self, seq: int, topic: str, value: bytes | None, key: bytes | None, partition: int | None,
        timestamp_ms: int | None, headers: Headers | None, sink: Sink,
    ) -> None:  # fmt: skip
        self.seq = seq
        self.topic = topic
        self.value = value
        self.key = key
        self.partition = partition
        self.timestamp_ms = timestamp_ms
        self.headers = headers
        self.sink = sink
        self.sends = 1
        self.alone = False  # sent again in a batch of its own (after a size refusal)


class ProducerReplaced(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """The record was handed to a producer that broke before Kafka acknowledged it; it may
    or may not be in Kafka. Send it again (on the replacement) or fail it to its caller."""

    retriable = True


class ProducerUnavailable(KafkaConnectionError):  # type: ignore[misc]
    """No working producer within the wait: the old one broke and a new one has not started
    (Kafka unreachable)."""


class GuardedProducer(Lifecycle):
    """An aiokafka producer (from `factory`) behind `send()`, replaced when it breaks; see
    the module docstring. A `jobstream.lifecycle.Service`: `start()` raises (having closed
    it) if Kafka cannot be bootstrapped; `close()` flushes and stops the producer (and a
    replacement under way), bounded by the producer's request timeout."""

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
        super().__init__()
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
        self._resender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | Any = None  # set by start()
        self._watch: asyncio.Task[None] | None = None
        self._pending = 0  # records handed over and not yet settled
        self._seq = 0
        self._resend: list[_Record] = []  # failed by a broken producer; sent again on the next
        self._resending_to: Any | None = None  # a replacement taking the resends, not yet installed
        self._resend_broken: str | None = None  # why that replacement broke meanwhile
        self._acked = 0  # acknowledgements so far: the watchdog reads progress from it
        self._seen_acked = 0
        self._stalled_since = time.monotonic()  # records waiting and no acknowledgement since
        self._answering_since: float | None = None  # metadata answered since, while acks lag
        self.problem: str | None = None
        self.replacements = 0

    async def _startup(self) -> None:
        """Start the first producer; raises (having closed it) if Kafka cannot be bootstrapped."""
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._loop = asyncio.get_running_loop()
        self._install(producer)
        self._watch = asyncio.create_task(self._watchdog(), name=f"{self.name}-watchdog")

    async def _shutdown(self) -> None:
        """Flush and stop the producer (and a replacement under way)."""
        for task in (self._watch, self._swap, self._resender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._current is not None:
            await self._current.stop()
        self._current = None
        self._ready.set()  # wake waiting senders; they find no producer and raise
        self._fail_resends(ProducerUnavailable("the producer closed before Kafka acknowledged the record"))

    @property
    def current(self) -> Any:
        """The aiokafka producer sending now; None while a replacement is under way."""
        return self._current

    @property
    def client(self) -> Any:
        """The newest producer's cluster client (cached metadata; while a replacement is under
        way, the broken one's, already closed: ask `problem` first)."""
        assert self._last is not None, "start() first"
        return self._last.client

    async def partitions_for(self, topic: str) -> Any:
        """The topic's partition ids (from metadata; waits for a working producer)."""
        producer = self._current
        if producer is None:
            producer = await self._wait_for_producer()
        return await producer.client._wait_on_metadata(topic)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]:
        """Hand a record over; the returned future resolves once Kafka acknowledged it.
        Raises what aiokafka's `send()` raises for the record itself (too large for
        `max_request_size`), or `ProducerUnavailable`."""
        producer = self._current
        if producer is None:
            producer = await self._wait_for_producer()
        # the hot path: no record object (only a failure builds one), no extra coroutine
        inner = await producer.send(
            topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms, headers=headers
        )
        outer: asyncio.Future[Any] = self._loop.create_future()
        self._seq += 1
        self._pending += 1
        args = (self._seq, topic, value, key, partition, timestamp_ms, headers)
        inner.add_done_callback(functools.partial(self._settled, producer, args, outer, None))
        return outer

    async def send_notify(
        self,
        callback: Settled,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """`send()` without a future: `callback(None)` once Kafka acknowledged the record,
        `callback(exc)` once it certainly will not have it, called in the very loop step
        that settles it. A future would wake its waiters a loop turn later, and a caller
        that sends more records on the acknowledgement would then miss the producer's next
        request (more, smaller requests under load). Raises what `send()` raises."""
        producer = self._current
        if producer is None:
            producer = await self._wait_for_producer()
        inner = await producer.send(topic, value, key=key, partition=partition, headers=headers)
        self._seq += 1
        self._pending += 1
        args = (self._seq, topic, value, key, partition, None, headers)
        inner.add_done_callback(functools.partial(self._settled, producer, args, _Notify(callback), None))

    async def send_all(self, records: Sequence[SendRecord]) -> SendGroup:
        """Hand `(topic, value, key, partition, headers)` records over, in order per
        partition; the group settles once Kafka acknowledged or refused each. What `send()`
        raises for a record itself is that record's error; `ProducerUnavailable` is raised
        for the lot.

        A partition's run of `BATCH_RUN` records or more goes in batches of its own (one
        callback a batch, no per-record future: aiokafka's `send()` costs more than the rest
        of the submit path); a shorter run joins whatever batch the producer has open."""
        group = SendGroup(self._loop, len(records))
        base = self._seq
        self._seq += len(records)
        runs: dict[tuple[str, int | None], list[int]] = {}
        for i, record in enumerate(records):
            runs.setdefault((record[0], record[3]), []).append(i)
        for (topic, partition), run in runs.items():
            if partition is None or len(run) < BATCH_RUN:
                await self._send_each(group, base, records, run)
            else:
                await self._send_batches(group, base, records, run, topic, partition)
        return group

    async def _send_each(
        self, group: SendGroup, base: int, records: Sequence[SendRecord], run: list[int]
    ) -> None:
        """Records of `run` one by one, each joining the batch open for its partition."""
        settled = self._settled_in_group
        for i in run:
            producer = self._current
            if producer is None:
                producer = await self._wait_for_producer()
            record = records[i]
            topic, value, key, partition, headers = record
            try:
                inner = await producer.send(topic, value, key=key, partition=partition, headers=headers)
            except KafkaError as exc:  # refused by the client (too large for max_request_size)
                group._settle(i, exc)
                continue
            self._pending += 1
            inner.add_done_callback(functools.partial(settled, producer, group, i, base, record))

    async def _send_batches(
        self, group: SendGroup, base: int, records: Sequence[SendRecord], run: list[int], topic: str,
        partition: int,
    ) -> None:  # fmt: skip
        """One partition's records, in as few batches as the batch size allows."""
        start = 0
        while start < len(run):
            if len(records[run[start]][1]) > BATCH_RECORD_MAX:  # `send()` checks max_request_size
                await self._send_each(group, base, records, [run[start]])
                start += 1
                continue
            producer = self._current
            if producer is None:
                producer = await self._wait_for_producer()
            batch = producer.create_batch()
            end = start
            while end < len(run):
                _, value, key, _, headers = records[run[end]]
                if len(value) > BATCH_RECORD_MAX:
                    break  # on its own, above
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    break  # full (an empty batch takes any record: `end` moved at least once)
                end += 1
            taken = run[start:end]
            start = end
            try:
                inner = await producer.send_batch(batch, topic, partition=partition)
            except KafkaError as exc:
                for i in taken:
                    group._settle(i, exc)
                continue
            self._pending += len(taken)
            settled = functools.partial(self._batch_settled, producer, group, taken, base, records)
            inner.add_done_callback(settled)

    def _batch_settled(
        self, producer: Any, group: SendGroup, taken: list[int], base: int, records: Sequence[SendRecord],
        inner: asyncio.Future[Any],
    ) -> None:  # fmt: skip
        """A batch of `send_all` settled: each record's outcome, or each record failed on
        the per-record path (sent again, alone if the batch was too large)."""
        if not inner.cancelled() and inner.exception() is None:
            self._pending -= len(taken)
            self._acked += len(taken)
            for i in taken:
                group._settle(i, None)
            return
        for i in taken:
            topic, value, key, partition, headers = records[i]
            self._settled(
                producer, (base + i + 1, topic, value, key, partition, None, headers), (group, i), None, inner
            )

    def _settled_in_group(
        self, producer: Any, group: SendGroup, i: int, base: int,
        record: SendRecord, inner: asyncio.Future[Any],
    ) -> None:  # fmt: skip
        """`_settled` for a record of a group, with the success path kept short (hot)."""
        if not inner.cancelled() and inner.exception() is None:
            self._pending -= 1
            self._acked += 1
            group._settle(i, None)
            return
        topic, value, key, partition, headers = record
        self._settled(
            producer, (base + i + 1, topic, value, key, partition, None, headers), (group, i), None, inner
        )

    async def _send_record(self, producer: Any, record: _Record) -> None:
        """Send `record` again (alone in its batch after a size refusal)."""
        if record.alone and record.partition is not None:
            batch = producer.create_batch()
            batch.append(
                key=record.key,
                value=record.value,
                timestamp=record.timestamp_ms,
                headers=record.headers or [],
            )
            inner = await producer.send_batch(batch, record.topic, partition=record.partition)
        else:
            inner = await producer.send(
                record.topic, record.value, key=record.key, partition=record.partition,
                timestamp_ms=record.timestamp_ms, headers=record.headers,
            )  # fmt: skip
        record.sends += 1
        self._pending += 1
        inner.add_done_callback(functools.partial(self._settled, producer, (), record.sink, record))

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
        self._stalled_since = time.monotonic()
        self.problem = None
        self._ready.set()

    async def _wait_for_producer(self) -> Any:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), self.wait_s)
        if self._current is None:
            why = "the producer is closed" if self._closing else self.problem
            raise ProducerUnavailable(f"no Kafka producer can send: {why}")
        return self._current

    def _settled(
        self, producer: Any, args: tuple[Any, ...], sink: Sink, record: _Record | None,
        inner: asyncio.Future[Any],
    ) -> None:  # fmt: skip
        self._pending -= 1
        if inner.cancelled():
            _resolve(sink, ProducerUnavailable("the send was cancelled"))
            return
        exc = inner.exception()
        if exc is None:
            self._acked += 1
            _resolve(sink, None, inner.result())
            return
        if producer is self._current or producer is self._resending_to:  # any failure leaves a gap
            self._replace(producer, describe(exc))
        if record is None:
            seq, topic, value, key, partition, timestamp_ms, headers = args
            record = _Record(seq, topic, value, key, partition, timestamp_ms, headers, sink)
        again = isinstance(exc, _NOT_WRITTEN) or (isinstance(exc, _TOO_LARGE) and not record.alone)
        if again and record.sends < MAX_RESENDS and not self._closing and not _sink_done(sink):
            record.alone = record.alone or isinstance(exc, _TOO_LARGE)
            self._resend.append(record)
            if self._current is not None:  # already replaced: this one settled late
                self._spawn_resend()
        else:
            _resolve(sink, exc)

    def _replace(self, broken: Any, why: str) -> None:
        """Stop sending to `broken` and start its replacement in the background."""
        if self._closing:
            return
        if broken is self._resending_to:  # broke while taking the resends: `_replace_with_new` goes on
            self._resend_broken = self._resend_broken or why
            return
        if broken is not self._current:
            return  # already being replaced
        self._current = None
        self._ready.clear()
        self.problem = f"the Kafka producer broke ({why}); replacing it"
        log.warning("producer broken name=%s error=%s; replacing it", self.name, why)
        self._swap = asyncio.create_task(self._replace_with_new(broken, why), name=f"{self.name}-swap")

    async def _replace_with_new(self, broken: Any, why: str) -> None:
        """Retire `broken`, start a new producer and hand it the resends before any new send;
        if the new one breaks while taking them (a resent record it cannot take leaves a gap
        too), it is retired the same way and another takes over."""
        failed = resent = 0
        while True:
            failed_back, producer = await self._retire_and_start(broken, why)
            failed += failed_back
            self.replacements += 1
            self._resending_to = producer
            try:
                resent += await self._send_again(producer)
            finally:
                self._resending_to = None
            if self._resend_broken is None:
                break
            broken, why, self._resend_broken = producer, self._resend_broken, None
            log.warning(
                "producer broken name=%s error=%s while taking the resends; replacing it", self.name, why
            )
        self._install(producer)
        log.warning(
            "producer replaced name=%s after=%s resent=%d batches_failed_back=%d",
            self.name,
            why,
            resent,
            failed,
        )

    async def _retire_and_start(self, broken: Any, why: str) -> tuple[int, Any]:
        """Let `broken` finish what it can for `grace_s`, fail back the rest and stop it, while
        a new producer starts; how many batches failed back, and the started producer."""
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
            try:
                producer = await asyncio.wait_for(asyncio.shield(starting), self.wait_s)
            except TimeoutError:  # Kafka is away: what waits to be sent again fails now
                self._fail_resends(ProducerUnavailable(f"no Kafka producer can send: {self.problem}"))
                producer = await starting
        except BaseException:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            raise
        return failed, producer

    async def _send_again(self, producer: Any) -> int:
        """Send the records a broken producer failed, in their first order; how many."""
        count = 0
        while self._resend and self._resend_broken is None:  # more may fail meanwhile
            records, self._resend = sorted(self._resend, key=lambda r: r.seq), []
            count += len(records)
            for record in records:
                try:
                    await self._send_record(producer, record)
                except Exception as exc:  # e.g. refused by the client now: the caller hears it
                    _resolve(record.sink, exc)
        return count

    def _spawn_resend(self) -> None:
        if self._resender is None or self._resender.done():
            self._resender = asyncio.create_task(self._resend_late(), name=f"{self.name}-resend")

    async def _resend_late(self) -> None:
        while self._resend and not self._closing:
            try:
                producer = await self._wait_for_producer()
            except ProducerUnavailable as exc:
                self._fail_resends(exc)
                return
            await self._send_again(producer)

    def _fail_resends(self, exc: BaseException) -> None:
        records, self._resend = self._resend, []
        for record in records:
            _resolve(record.sink, exc)

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
                self.problem = f"the Kafka producer broke ({why}); a new one cannot start: {describe(exc)}"
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
                self._replace(producer, f"its sender stopped: {describe(err) if err else 'cancelled'}")
                continue
            now = time.monotonic()
            if not self._pending or self._acked != self._seen_acked:  # idle, or making progress
                self._seen_acked = self._acked
                self._stalled_since = now
            waited = now - self._stalled_since
            if waited < min(5.0, self.stuck_after_s / 2):
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
