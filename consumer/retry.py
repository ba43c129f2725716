"""The retry decision: whether a failed attempt runs again, when, and where it waits.

Pure functions and small classes; time and randomness are passed in. `decide` is the
whole decision for one failed attempt, a function of the job, its handler, the failure
and the worker's `RetryPolicy`: dead (and why), or retried in a tier.

A failed attempt with attempts left waits on a retry topic, one topic per delay tier.
Every record in a tier waits that tier's delay from when it was written, so a tier's
records fall due in log order and a reader only ever has to look at a partition's head.
The tier is the one nearest (on a log scale) to the backoff delay the job asked for. The
worker holds a fetched retry record until its due time (`consumer.dispatch`).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from consumer.app import HandlerSpec
from consumer.errors import NonRetryable
from jobstream.settings import WorkerSettings
from schemas import Backoff, DeadReason, JobEnvelope

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIER = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True, slots=True, order=True)
class Tier:
    delay_ms: int
    name: str

    @classmethod
    def parse(cls, text: str) -> Tier:
        """`"10s"` is a 10-second tier named `10s`; units are ms, s, m, h, d."""
        m = _TIER.match(text.strip())
        if m is None or int(m.group(1)) <= 0:
            raise ValueError(f"a retry tier is a positive number and a unit (ms, s, m, h, d), got {text!r}")
        return cls(int(m.group(1)) * _UNITS[m.group(2)], text.strip())


def parse_tiers(text: str) -> tuple[Tier, ...]:
    """`"1s,10s,1m"`: the tiers, shortest first; duplicates are refused."""
    tiers = sorted(Tier.parse(t) for t in text.split(",") if t.strip())
    if not tiers:
        raise ValueError("at least one retry tier is needed")
    if len({t.delay_ms for t in tiers}) != len(tiers):
        raise ValueError(f"retry tiers repeat a delay: {text!r}")
    return tuple(tiers)


def backoff_delay_ms(backoff: Backoff, attempt: int, rng: random.Random | None = None) -> int:
    """The wait after failed attempt `attempt` (1-based): base * 2^(attempt-1) for exponential,
    base for fixed, capped at max_ms, then spread by ± jitter (a fraction), never negative."""
    if backoff.kind == "fixed":
        delay = float(backoff.base_ms)
    else:
        delay = backoff.base_ms * math.pow(2, min(attempt - 1, 62))
    delay = min(delay, float(backoff.max_ms))
    if backoff.jitter > 0:
        r = (rng or random).uniform(-backoff.jitter, backoff.jitter)
        delay *= 1 + r
    return max(0, round(delay))


def choose_tier(delay_ms: int, tiers: tuple[Tier, ...]) -> Tier:
    """The tier whose delay is nearest to `delay_ms` on a log scale (ties go to the shorter)."""
    if delay_ms <= tiers[0].delay_ms:
        return tiers[0]
    if delay_ms >= tiers[-1].delay_ms:
        return tiers[-1]
    target = math.log(delay_ms)
    return min(tiers, key=lambda t: (abs(math.log(t.delay_ms) - target), t.delay_ms))


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the runner saw it."""

    error: dict[str, Any]  # type, message, traceback
    exc: BaseException | None = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The worker's side of the decision, read from its settings once."""

    default_max_attempts: int
    tiers: tuple[Tier, ...]

    @classmethod
    def of(cls, settings: WorkerSettings) -> RetryPolicy:
        return cls(settings.default_max_attempts, parse_tiers(settings.retry_tiers))


def max_attempts(job: JobEnvelope, spec: HandlerSpec | None, policy: RetryPolicy) -> int:
    """The job's `max_attempts`, else its handler's, else the worker default."""
    if job.max_attempts is not None:
        return job.max_attempts
    if spec is not None and spec.max_attempts is not None:
        return spec.max_attempts
    return policy.default_max_attempts


def decide(
    job: JobEnvelope,
    spec: HandlerSpec | None,
    failure: Failure,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> DeadReason | Tier:
    """Why the job is dead after this failed attempt, or the tier its next attempt waits in
    (the one nearest its backoff delay: the job's backoff, else its handler's, else the
    default). No handler, a `NonRetryable` or a class the handler lists end it at once."""
    if spec is None:
        return DeadReason.unknown_type
    exc = failure.exc
    if isinstance(exc, NonRetryable) or (exc is not None and isinstance(exc, spec.non_retryable)):
        return DeadReason.non_retryable
    if job.attempt >= max_attempts(job, spec, policy):
        return DeadReason.timeout if failure.timed_out else DeadReason.exhausted
    backoff = job.backoff or spec.backoff or _DEFAULT_BACKOFF
    return choose_tier(backoff_delay_ms(backoff, job.attempt, rng), policy.tiers)
