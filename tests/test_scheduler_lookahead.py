"""The scheduler's clock arithmetic (`scheduler.lookahead`): pure, no Redis or Kafka."""

from __future__ import annotations

from scheduler.lookahead import Lookahead

NOW = 1_000_000


def test_lookahead_is_at_most_a_quarter_of_the_lease() -> None:
    """The lookahead asked for holds unless it would eat more than a quarter of the lease."""
    assert Lookahead.of(50, 10_000, 1.0) == Lookahead(50, 10_000, 1000.0)
    assert Lookahead.of(5_000, 10_000, 1.0).ahead_ms == 2_500


def test_claims_reach_the_horizon() -> None:
    """A claim takes the jobs due within the lookahead."""
    assert Lookahead.of(50, 10_000, 1.0).horizon(NOW) == NOW + 50


def test_produce_timeout_leaves_the_lease_room() -> None:
    """Acks are awaited at most half of what the lookahead leaves of the lease."""
    clock = Lookahead.of(50, 10_000, 1.0)
    assert clock.produce_timeout_s(5.0) == 4.975
    assert clock.produce_timeout_s(2.0) == 2.0


def test_next_claim_is_half_a_lookahead_early_or_at_a_lease_expiry() -> None:
    """The next claim comes when the next job is due within half the lookahead, or when a
    lease expires, whichever is first; None with nothing waiting."""
    clock = Lookahead.of(50, 10_000, 1.0)
    assert clock.claim_at(NOW + 500, None) == NOW + 475
    assert clock.claim_at(None, NOW + 300) == NOW + 300
    assert clock.claim_at(NOW + 500, NOW + 300) == NOW + 300
    assert clock.claim_at(NOW + 500, NOW + 900) == NOW + 475
    assert clock.claim_at(None, None) is None


def test_sleep_is_bounded_and_may_be_none() -> None:
    """The loop sleeps until the next claim, at most `max_sleep`; a claim due now or past
    means no sleep (<= 0); with nothing waiting it sleeps the longest."""
    clock = Lookahead.of(50, 10_000, 1.0)
    assert clock.sleep_ms(NOW + 200, NOW) == 200
    assert clock.sleep_ms(NOW + 60_000, NOW) == 1000.0
    assert clock.sleep_ms(None, NOW) == 1000.0
    assert clock.sleep_ms(NOW - 5, NOW) <= 0


def test_an_insert_wakes_the_loop_only_if_due_before_it_looks() -> None:
    """An insert wakes a sleeping loop when its job would be claimed before the loop's
    planned wake-up (due minus half the lookahead)."""
    clock = Lookahead.of(50, 10_000, 1.0)
    assert clock.wakes(NOW + 100, NOW + 100)  # claimable at NOW + 75
    assert not clock.wakes(NOW + 125, NOW + 100)
    assert clock.wakes(NOW + 10**9, float("inf"))  # not yet knowing the head: any insert
    assert not clock.wakes(NOW, float("-inf"))  # awake: nothing to wake
