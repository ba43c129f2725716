"""What a submit gives each job: `Submitted | Refused`, typed, one per item in order.

`producer.submit`, `producer.delayed` and `producer.idempotency` answer with these; only
the HTTP edge turns them into JSON (`producer.fastpath` for `POST /jobs`, one answer or an
error; `producer.routes` for a batch, one row per item).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobstream.http_errors import ItemError

__all__ = ["Refused", "SubmitResult", "Submitted"]


@dataclass(frozen=True, slots=True)
class Submitted:
    """The job is in Kafka (`queued`) or in Redis (`scheduled`, with `run_at`); or, a
    `duplicate`, an earlier job with the same idempotency key (`state`: its current one)."""

    id: str
    state: str
    run_at: str | None = None  # RFC 3339, when scheduled
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """Not accepted: `error` is what the item would have got alone (409, 413, 422 or 503);
    `id` when the job had one (Kafka or Redis did not take it)."""

    error: ItemError
    id: str | None = None


SubmitResult = Submitted | Refused
