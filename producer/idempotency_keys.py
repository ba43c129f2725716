"""The pure half of idempotency keys (`producer.idempotency` does the Redis part).

What is claimed (`KeyClaim`, `claim_key`), what a claim holds (`Record`), what a request is
(`fingerprint`), which items of a batch share a key (`Plan`), and what a holder found in
Redis means for a request (`judge`). No I/O here.

A fingerprint is the sha256 of the spec as canonical JSON (every field, defaults
included, keys sorted) without the idempotency key itself: two bodies that mean the same
job (`{"type": "a"}` and `{"type": "a", "priority": "normal"}`) are the same request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson

from jobstream.http_errors import FieldError, InvalidInput, ItemError
from schemas import JobSpec, new_job_id

MAX_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class Record:
    """The value stored at a claimed key."""

    fingerprint: str
    job_id: str
    status: Literal["pending", "done"]
    state: str | None = None  # the job's first state, once done

    def encode(self) -> str:
        return orjson.dumps(
            {"fp": self.fingerprint, "id": self.job_id, "status": self.status, "state": self.state}
        ).decode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Record | None:
        """The record, or None if `raw` is not one this module wrote."""
        try:
            doc = orjson.loads(raw)
            fp, job_id, status, state = doc["fp"], doc["id"], doc["status"], doc.get("state")
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return None
        if not isinstance(fp, str) or not isinstance(job_id, str) or status not in ("pending", "done"):
            return None
        return cls(fp, job_id, status, state if isinstance(state, str) else None)


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """One request's bid for a key: the job id it would produce, chosen up front."""

    key: str
    redis_key: str
    fingerprint: str
    job_id: str
    value: str  # the pending record, encoded: what the claim's owner compares against

    @classmethod
    def new(cls, key: str, prefix: str, fingerprint: str) -> KeyClaim:
        job_id = new_job_id()
        value = Record(fingerprint, job_id, "pending").encode()
        return cls(key, claim_key(prefix, key), fingerprint, job_id, value)


@dataclass(frozen=True, slots=True)
class Won:
    """The key was free and is now this request's: produce the job."""


@dataclass(frozen=True, slots=True)
class Seen:
    """The same request was accepted before: answer with its job."""

    job_id: str
    state: str


@dataclass(frozen=True, slots=True)
class Clash:
    """The key was used with a different body: 409."""

    message: str


@dataclass(frozen=True, slots=True)
class Busy:
    """The first request with the key did not finish in time: 409, retry."""

    key: str

    @property
    def message(self) -> str:
        return f"a request with idempotency key {self.key!r} is still in progress; retry shortly"


Outcome = Won | Seen | Clash | Busy


def claim_key(prefix: str, key: str) -> str:
    """The Redis key of a client's idempotency key (hashed: bounded, any characters)."""
    return f"{prefix}:idem:{hashlib.sha256(key.encode()).hexdigest()}"


def fingerprint(spec: JobSpec) -> str:
    doc = spec.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def different_body(key: str) -> str:
    return (
        f"idempotency key {key!r} was already used with a different body; "
        "repeat a request unchanged, or use a new key for a new job"
    )


def judge(claim: KeyClaim, held: bytes | str | None) -> Outcome | None:
    """What `held` (the value `SET NX GET` returned) means for `claim`; None: wait, pending."""
    if held is None:
        return Won()
    record = Record.decode(held)
    if record is None or record.fingerprint != claim.fingerprint:
        return Clash(different_body(claim.key))
    if record.status == "done":
        return Seen(record.job_id, record.state or "queued")
    return None


def with_header(spec: JobSpec, header: str | None) -> JobSpec:
    """`spec` carrying the `Idempotency-Key` header's key; 422 if it differs from the field."""
    if header is None:
        return spec
    if not 1 <= len(header) <= MAX_KEY_CHARS:
        message = f"must be 1 to {MAX_KEY_CHARS} characters"
        raise InvalidInput(f"header 'Idempotency-Key' {message}", [FieldError("Idempotency-Key", message)])
    if spec.idempotency_key is None:
        return spec.model_copy(update={"idempotency_key": header})
    if spec.idempotency_key != header:
        raise InvalidInput(
            "the Idempotency-Key header and the field 'idempotency_key' differ; "
            "send one of them, or the same key in both",
            [FieldError("idempotency_key", "differs from the Idempotency-Key header")],
        )
    return spec


@dataclass(slots=True)
class Plan:
    """Which items of a request carry keys. The first valid item with a key leads: only it
    claims; later items with the key follow it (same body) or clash (another body)."""

    claims: dict[int, KeyClaim] = field(default_factory=dict)  # by the leading item's index
    lead_of: dict[int, int] = field(default_factory=dict)  # every keyed item -> its lead
    clashes: dict[int, str] = field(default_factory=dict)  # followers with another body

    @classmethod
    def of(cls, items: Sequence[JobSpec | ItemError], prefix: str) -> Plan:
        plan = cls()
        leads: dict[str, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, JobSpec) or item.idempotency_key is None:
                continue
            key = item.idempotency_key
            fp = fingerprint(item)
            lead = plan.lead_of[i] = leads.setdefault(key, i)
            if lead == i:
                plan.claims[i] = KeyClaim.new(key, prefix, fp)
            elif plan.claims[lead].fingerprint != fp:
                plan.clashes[i] = different_body(key) + f" (item {lead} of this batch)"
        return plan
