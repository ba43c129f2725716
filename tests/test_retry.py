"""Backoff, tier choice and retry decisions (pure)."""

from __future__ import annotations

import random

import pytest

from consumer import HandlerSpec, JobContext, NonRetryable
from consumer.retry import (
    Failure,
    RetryPolicy,
    Tier,
    backoff_delay_ms,
    choose_tier,
    decide,
    max_attempts,
    parse_tiers,
)
from jobstream.settings import WorkerSettings
from schemas import Backoff, DeadReason, JobEnvelope

TIERS = parse_tiers("1s,10s,1m,10m,1h")


def test_parse_tiers_sorts_and_validates() -> None:
    """Tiers parse with units, sort by delay, and refuse junk and repeats."""
    assert [t.delay_ms for t in parse_tiers("10s, 500ms,1m")] == [500, 10_000, 60_000]
    assert Tier.parse("2h") == Tier(7_200_000, "2h")
    for bad in ("", "10", "1x", "0s", "1s,1000ms"):
        with pytest.raises(ValueError):
            parse_tiers(bad)


@pytest.mark.parametrize(
    ("delay_ms", "tier"),
    [(0, "1s"), (900, "1s"), (2_000, "1s"), (4_000, "10s"), (10_000, "10s"), (40_000, "1m"),
     (5 * 60_000, "10m"), (86_400_000, "1h")],
)  # fmt: skip
def test_choose_tier_is_nearest_on_a_log_scale(delay_ms: int, tier: str) -> None:
    """The chosen tier is the one nearest the delay on a log scale, clamped to the ends."""
    assert choose_tier(delay_ms, TIERS).name == tier


def test_exponential_backoff_doubles_and_caps() -> None:
    """Without jitter: base, 2*base, 4*base, ... up to max_ms."""
    b = Backoff(kind="exponential", base_ms=100, max_ms=1_000, jitter=0)
    assert [backoff_delay_ms(b, a) for a in range(1, 7)] == [100, 200, 400, 800, 1_000, 1_000]
    assert backoff_delay_ms(b, 10_000) == 1_000  # no overflow on huge attempts


def test_fixed_backoff_is_flat() -> None:
    """Fixed backoff waits base_ms every time."""
    b = Backoff(kind="fixed", base_ms=250, jitter=0)
    assert {backoff_delay_ms(b, a) for a in range(1, 10)} == {250}


def test_jitter_stays_within_bounds() -> None:
    """With jitter j, every delay lies within d*(1-j) .. d*(1+j), and they spread."""
    b = Backoff(kind="fixed", base_ms=1_000, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff_delay_ms(b, 1, rng) for _ in range(2_000)]
    assert min(delays) >= 800 and max(delays) <= 1_200
    assert max(delays) - min(delays) > 300


POLICY = RetryPolicy(default_max_attempts=3, tiers=TIERS)


class Unfixable(Exception):
    pass


async def _noop(ctx: JobContext) -> None:
    return None


def test_policy_comes_from_the_worker_settings() -> None:
    """The policy holds the settings' default max_attempts and their tiers, parsed."""
    policy = RetryPolicy.of(WorkerSettings(default_max_attempts=4, retry_tiers="10s,1s"))
    assert policy == RetryPolicy(4, parse_tiers("1s,10s"))


def test_decide_retries_until_attempts_run_out() -> None:
    """Attempts left: retry; the last attempt: dead as exhausted, or as timeout when it timed out."""
    spec = HandlerSpec("t", _noop)
    boom = Failure({"type": "E", "message": "x"}, RuntimeError("x"))
    assert isinstance(decide(JobEnvelope(id="a", type="t", attempt=2), spec, boom, POLICY), Tier)
    assert decide(JobEnvelope(id="a", type="t", attempt=3), spec, boom, POLICY) is DeadReason.exhausted
    late = Failure({"type": "JobTimeout", "message": "x"}, None, timed_out=True)
    assert decide(JobEnvelope(id="a", type="t", attempt=3), spec, late, POLICY) is DeadReason.timeout


def test_decide_picks_the_tier_of_the_job_then_handler_backoff() -> None:
    """A retry waits in the tier nearest its backoff delay: the job's backoff, else its handler's."""
    boom = Failure({"type": "E", "message": "x"}, RuntimeError("x"))
    slow = Backoff(kind="fixed", base_ms=50_000, jitter=0)
    spec = HandlerSpec("t", _noop, backoff=slow)
    job = JobEnvelope(id="a", type="t", attempt=1)
    assert decide(job, spec, boom, POLICY) == Tier(60_000, "1m")
    fast = JobEnvelope(id="a", type="t", attempt=1, backoff=Backoff(kind="fixed", base_ms=8_000, jitter=0))
    assert decide(fast, spec, boom, POLICY) == Tier(10_000, "10s")


def test_job_then_handler_then_worker_decide_max_attempts() -> None:
    """A job's max_attempts wins over its handler's, which wins over the worker default."""
    assert max_attempts(JobEnvelope(id="a", type="t"), HandlerSpec("t", _noop), POLICY) == 3
    five = HandlerSpec("t", _noop, max_attempts=5)
    assert max_attempts(JobEnvelope(id="a", type="t"), five, POLICY) == 5
    assert max_attempts(JobEnvelope(id="a", type="t", max_attempts=1), five, POLICY) == 1


def test_non_retryable_errors_go_straight_to_dead() -> None:
    """NonRetryable, or a class the handler lists, dead-letters on the first attempt; no handler too."""
    spec = HandlerSpec("t", _noop, non_retryable=(Unfixable,))
    job = JobEnvelope(id="a", type="t", attempt=1)
    for exc in (NonRetryable("no"), Unfixable("no")):
        failure = Failure({"type": "E", "message": "no"}, exc)
        assert decide(job, spec, failure, POLICY) is DeadReason.non_retryable
    assert isinstance(decide(job, spec, Failure({"type": "E", "message": "x"}, ValueError()), POLICY), Tier)
    assert decide(job, None, Failure({"type": "E", "message": "x"}), POLICY) is DeadReason.unknown_type
