"""Partitions whose sends are stuck, so that new keyless jobs go elsewhere.

While a partition's leadership moves (a broker stopping, restarting or lost), sends to it
wait until the new leader takes them: milliseconds on a healthy cluster, seconds on a
loaded one (up to ~5 s on the 2-core test machine with three nodes, the submit timeout).
A job without a key may go to any partition, so the API gives it an id that hashes away
from the partitions stuck at that moment, on the job topic and the status topic alike,
and it is answered as soon as the healthy partitions take it. The Java client's adaptive
partitioning does the same for keyless records (KIP-794,
`partitioner.availability.timeout.ms`).

A partition is stuck when a batch for it has waited longer than `after_s`, in flight or
queued behind one. That is read from the aiokafka producer's accumulator (private fields:
`tests/test_stalls.py` checks them against the installed aiokafka), at most every
`every_s`, never per job. When half a topic's partitions or more are stuck, that is no
leader move but a slow cluster or Kafka down: nothing of that topic is avoided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from schemas import new_job_id, partition_for

log = logging.getLogger("jobstream.kafka.stalls")

NOTHING: dict[str, frozenset[int]] = {}
TRIES = 64  # ids drawn before giving up (the stuck sets of both topics may leave few partitions allowed)


class Stalls:
    """`stuck()`: each topic's stuck partitions (empty when none, the usual case)."""

    def __init__(self, producer: Callable[[], Any], after_s: float, every_s: float = 0.05) -> None:
        self._producer = producer  # the aiokafka producer sending now, or None
        self._after_s = after_s
        self._every_s = every_s
        self._read_at = 0.0
        self._stuck = NOTHING
        self._broken = False

    def stuck(self) -> dict[str, frozenset[int]]:
        now = time.monotonic()
        if now - self._read_at >= self._every_s:
            self._read_at = now
            self._stuck = self._read(now)
        return self._stuck

    def _read(self, now: float) -> dict[str, frozenset[int]]:
        producer = self._producer()
        if producer is None or self._broken or self._after_s <= 0:
            return NOTHING
        try:
            acc = producer._message_accumulator
            waiting = [*acc._pending_batches, *(q[0] for q in list(acc._batches.values()) if q)]
            cutoff = now - self._after_s
            found: dict[str, set[int]] = {}
            for batch in waiting:
                if batch._ctime < cutoff:
                    found.setdefault(batch._tp.topic, set()).add(batch._tp.partition)
        except (AttributeError, TypeError) as exc:  # another aiokafka: stop looking, say so once
            self._broken = True
            log.warning("cannot see which partitions are stuck in this aiokafka (%r); not avoiding any", exc)
            return NOTHING
        if not found:
            return NOTHING
        return {topic: frozenset(parts) for topic, parts in found.items()}


def job_id_avoiding(
    now: int,
    job_partitions: int,
    job_stuck: frozenset[int],
    status_partitions: int,
    status_stuck: frozenset[int],
) -> str:
    """A new job id whose job record and status events hash to no stuck partition (the
    record key of a keyless job is its id). A set holding half the partitions or more is
    ignored (see the module docstring)."""
    if 2 * len(job_stuck) >= job_partitions:
        job_stuck = frozenset()
    if 2 * len(status_stuck) >= status_partitions:
        status_stuck = frozenset()
    job_id = new_job_id(now)
    for _ in range(TRIES):
        if (
            partition_for(job_id, job_partitions) not in job_stuck
            and partition_for(job_id, status_partitions) not in status_stuck
        ):
            break
        job_id = new_job_id(now)
    return job_id
