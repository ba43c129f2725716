"""The health monitor's verdicts (`producer.health.HealthMonitor`): pure, a clock the test moves.

The checks are fakes that answer, fail, or are late; a late check raises `TimeoutError`,
what `asyncio.wait_for` raises when a check does not answer within `timeout_s`.
"""

from __future__ import annotations

from producer.health import HealthMonitor

GRACE_S = 5.0


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Service:
    """A fake check: `answers`, `fails` (refused), or is `late` (no answer within the timeout)."""

    def __init__(self) -> None:
        self.mode = "answers"

    async def __call__(self) -> None:
        if self.mode == "fails":
            raise ConnectionError("refused")
        if self.mode == "late":
            raise TimeoutError


def monitor(clock: Clock, service: Service) -> HealthMonitor:
    return HealthMonitor({"kafka": service}, timeout_s=2.0, grace_s=GRACE_S, clock=clock)


async def test_late_check_within_grace_of_a_served_request_keeps_the_service_up() -> None:
    """A check that is late while the service served a request less than grace_s ago changes nothing."""
    clock, kafka = Clock(), Service()
    health = monitor(clock, kafka)
    health.note_ok("kafka")
    kafka.mode = "late"
    clock.now += GRACE_S - 0.001
    assert await health.check_now() == {"kafka": True}
    assert health.report() == {"kafka": "ok"}


async def test_late_check_after_grace_marks_the_service_down() -> None:
    """Once nothing has shown the service alive for grace_s, a late check marks it down, saying why."""
    clock, kafka = Clock(), Service()
    health = monitor(clock, kafka)
    health.note_ok("kafka")
    kafka.mode = "late"
    clock.now += GRACE_S
    assert await health.check_now() == {"kafka": False}
    assert health.down() == ["kafka"] and health.report() == {"kafka": "down: no answer within 2s"}


async def test_a_passing_check_starts_the_grace_period_too() -> None:
    """A check that answers counts as a sign of life: a late one just after it is forgiven."""
    clock, kafka = Clock(), Service()
    health = monitor(clock, kafka)
    assert await health.check_now() == {"kafka": True}
    kafka.mode = "late"
    clock.now += 1.0
    assert await health.check_now() == {"kafka": True}
    clock.now += GRACE_S
    assert await health.check_now() == {"kafka": False}


async def test_never_seen_alive_a_late_service_is_down_at_once() -> None:
    """With no sign of life yet, the first late check marks the service down."""
    clock, kafka = Clock(), Service()
    kafka.mode = "late"
    health = monitor(clock, kafka)
    assert await health.check_now() == {"kafka": False}


async def test_a_failing_check_marks_down_despite_recent_life() -> None:
    """A check that fails (rather than being late) marks the service down at once, grace or not."""
    clock, kafka = Clock(), Service()
    health = monitor(clock, kafka)
    health.note_ok("kafka")
    kafka.mode = "fails"
    assert await health.check_now() == {"kafka": False}
    assert health.report() == {"kafka": "down: ConnectionError: refused"}


async def test_a_late_check_within_grace_keeps_a_down_service_down() -> None:
    """Grace keeps the verdict: a down service stays down until a check passes or a request is served."""
    clock, kafka = Clock(), Service()
    health = monitor(clock, kafka)
    health.note_ok("kafka")
    health.mark_down("kafka", "send failed")
    kafka.mode = "late"
    assert await health.check_now() == {"kafka": False}
    assert health.report() == {"kafka": "down: send failed"}
    health.note_ok("kafka")
    assert health.is_up("kafka")
    kafka.mode = "answers"
    health.mark_down("kafka", "send failed")
    assert await health.check_now() == {"kafka": True}
