"""The scheduler's clock arithmetic: how far ahead it claims, when it claims next, how long
it sleeps, which inserts wake it. Pure: times in ms since the epoch, no I/O.

A claim takes the jobs due within `ahead_ms` (at most a quarter of the lease: the rest is
for Kafka), so their `queued` round trip happens before they are due. The next claim comes
when the earliest job left is due within half the lookahead (so each claim takes about
that much), or when a lease expires, whichever is first; the loop sleeps until then, at
most `max_sleep_ms`. An insert wakes it when its job would be claimed before the loop
planned to look.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lookahead"]


@dataclass(frozen=True, slots=True)
class Lookahead:
    ahead_ms: int
    lease_ms: int
    max_sleep_ms: float

    @classmethod
    def of(cls, lookahead_ms: int, lease_ms: int, max_sleep_s: float) -> Lookahead:
        """The lookahead asked for, bounded by a quarter of the lease."""
        return cls(min(lookahead_ms, lease_ms // 4), lease_ms, max_sleep_s * 1000)

    def horizon(self, now: int) -> int:
        """Claim the jobs due by then."""
        return now + self.ahead_ms

    def produce_timeout_s(self, wanted_s: float) -> float:
        """How long a claimed batch may wait for Kafka's acks: well before the lease runs out
        (half of what the lookahead leaves), so what is not acknowledged stays claimed."""
        return min(wanted_s, (self.lease_ms - self.ahead_ms) / 2000)

    def claim_at(self, next_due: int | None, next_expiry: int | None) -> int | None:
        """When to claim next, given the earliest due time and lease expiry left; None: nothing
        is waiting."""
        early = None if next_due is None else next_due - self.ahead_ms // 2
        return min((t for t in (early, next_expiry) if t is not None), default=None)

    def sleep_ms(self, claim_at: int | None, now: int) -> float:
        """How long to sleep until `claim_at` (at most `max_sleep_ms`); <= 0: claim at once."""
        return self.max_sleep_ms if claim_at is None else min(claim_at - now, self.max_sleep_ms)

    def wakes(self, due: int, sleeping_until: float) -> bool:
        """Whether an insert of a job due at `due` must wake a loop asleep until then."""
        return due - self.ahead_ms // 2 < sleeping_until
