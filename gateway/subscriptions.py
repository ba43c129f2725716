"""Subscriptions: which clients want which status events (pure: no sockets, no queues).

One rule decides: a subscriber wants an event when it follows everything (`all`), the
event's job id, or the event's type (when `type` is a string). `wants(sub, event)` states
the rule for one subscriber (the replay filters with it); `Subscriptions.match(events)`
applies the same rule to a batch through three indexes (job id -> subscribers, type ->
subscribers, subscribers of everything), so a batch costs O(events + matching pairs), not
O(events x subscribers), and no allocation per event beyond the lists it returns. A
model-based test pins `match` to `wants`.

A subscriber whose API key is limited to some job types (`sees`, not None) never gets an
event of another type, whatever it follows; following everything it is kept apart from
the unlimited (`limited_all`), who share one frame per batch.

A subscriber keeps its own selection (the `Subscriber` protocol: `jobs`, `types`, `all`),
which the hub reads for replies; only `subscribe`, `unsubscribe` and `forget` change it,
together with the indexes, so the two always say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from gateway.errors import ProtocolError
from gateway.protocol import Selection
from gateway.ring import Event

__all__ = ["MAX_JOBS_PER_CLIENT", "Subscriber", "Subscriptions", "wants"]

MAX_JOBS_PER_CLIENT = 100_000


class Subscriber(Hashable, Protocol):
    """What the index needs of a client: its selection, kept on it for O(1) reads."""

    jobs: set[str]
    types: set[str]
    all: bool
    sees: Callable[[str], bool] | None  # the job types its key may see; None: every type


S = TypeVar("S", bound=Subscriber)


def wants(sub: Subscriber, ev: Event) -> bool:
    """The matching rule: `sub` may see `ev`'s type, and follows everything, `ev`'s job id,
    or `ev`'s type."""
    type_ = ev.get("type")
    if sub.sees is not None and not (isinstance(type_, str) and sub.sees(type_)):
        return False
    if sub.all or ev["job_id"] in sub.jobs:
        return True
    return isinstance(type_, str) and type_ in sub.types


class Subscriptions(Generic[S]):
    """The index of every subscriber's selection. Nothing here awaits or does I/O."""

    def __init__(self, max_jobs: int = MAX_JOBS_PER_CLIENT) -> None:
        self.max_jobs = max_jobs  # job ids one subscriber may follow
        self.everyone: set[S] = set()  # subscribers with `all`; they share one frame per batch
        self.limited_all: set[S] = set()  # subscribers with `all` limited to some types
        self._by_job: dict[str, set[S]] = {}
        self._by_type: dict[str, set[S]] = {}

    def counts(self) -> dict[str, int]:
        """How many subscribers follow everything, and how many job ids and types are followed."""
        return {
            "all": len(self.everyone) + len(self.limited_all),
            "jobs": len(self._by_job),
            "types": len(self._by_type),
        }

    def check_capacity(self, sub: S, new_jobs: int) -> None:
        """Raise `ProtocolError` if `new_jobs` more job ids would pass `max_jobs`."""
        if len(sub.jobs) + new_jobs > self.max_jobs:
            raise ProtocolError(
                f"too many job ids: a connection may follow at most {self.max_jobs}; "
                'unsubscribe some or send {"subscribe": {"types": [...]}} instead',
                code="too_many_jobs",
            )

    def subscribe(self, sub: S, sel: Selection) -> None:
        """Add `sel` to `sub`'s selection; raises `ProtocolError` past `max_jobs`, or for a type
        its key may not see (nothing added)."""
        new_jobs = [j for j in sel.jobs if j not in sub.jobs]
        self.check_capacity(sub, len(new_jobs))
        if sub.sees is not None:
            for type_ in sel.types:
                if not sub.sees(type_):
                    raise ProtocolError(
                        f"this connection's API key may not see jobs of type '{type_}': "
                        "nothing was subscribed",
                        code="forbidden",
                    )
        for job_id in new_jobs:
            sub.jobs.add(job_id)
            self._by_job.setdefault(job_id, set()).add(sub)
        for type_ in sel.types:
            sub.types.add(type_)
            self._by_type.setdefault(type_, set()).add(sub)
        if sel.all:
            sub.all = True
            (self.everyone if sub.sees is None else self.limited_all).add(sub)

    def unsubscribe(self, sub: S, sel: Selection) -> None:
        """Take `sel` out of `sub`'s selection; what it does not follow is ignored."""
        for job_id in sel.jobs:
            if job_id in sub.jobs:
                sub.jobs.discard(job_id)
                _discard(self._by_job, job_id, sub)
        for type_ in sel.types:
            if type_ in sub.types:
                sub.types.discard(type_)
                _discard(self._by_type, type_, sub)
        if sel.all:
            sub.all = False
            self.everyone.discard(sub)
            self.limited_all.discard(sub)

    def forget(self, sub: S) -> None:
        """Take `sub` out of the index; it follows nothing afterwards. Idempotent."""
        self.everyone.discard(sub)
        self.limited_all.discard(sub)
        for job_id in sub.jobs:
            _discard(self._by_job, job_id, sub)
        for type_ in sub.types:
            _discard(self._by_type, type_, sub)
        sub.jobs.clear()
        sub.types.clear()
        sub.all = False

    def match(self, events: list[Event]) -> dict[S, list[Event]]:
        """Per subscriber not in `everyone`, the events it `wants`, in order, each once."""
        matched: dict[S, list[Event]] = {}
        by_job, by_type, limited_all = self._by_job, self._by_type, self.limited_all
        if not by_job and not by_type and not limited_all:
            return matched
        for ev in events:
            job_id = ev["job_id"]
            type_ = ev.get("type")
            subs = by_job.get(job_id) if by_job else None
            if subs:
                for c in subs:
                    if not c.all and (c.sees is None or (isinstance(type_, str) and c.sees(type_))):
                        got = matched.get(c)
                        if got is None:
                            matched[c] = [ev]
                        else:
                            got.append(ev)
            subs = by_type.get(type_) if by_type and isinstance(type_, str) else None
            if subs:
                for c in subs:  # a type followed is one the key may see (`subscribe` checks)
                    if not c.all and job_id not in c.jobs:  # else the job index matched it
                        got = matched.get(c)
                        if got is None:
                            matched[c] = [ev]
                        else:
                            got.append(ev)
            if limited_all and isinstance(type_, str):
                for c in limited_all:
                    if c.sees is not None and c.sees(type_):
                        got = matched.get(c)
                        if got is None:
                            matched[c] = [ev]
                        else:
                            got.append(ev)
        return matched


def _discard(index: dict[str, set[S]], key: str, sub: S) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
