"""Status event constructors (`schemas.events`): pure."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import JobEnvelope, Priority, StatusEvent, events, rfc3339
from schemas.status import JobState

AT = 1_900_000_000_000


def _job(**fields: Any) -> JobEnvelope:
    return JobEnvelope(id="j1", type="images.resize", payload={}, priority=Priority.high, **fields)


def _all() -> list[events.Event]:
    child = _job(parent_id="p1", attempt=2)
    queued = events.queued(_job(), AT)
    return [
        queued,
        events.queued(child, AT),
        events.scheduled(_job(not_before=AT + 5_000), AT),
        events.fired({"id": "j1", "type": "t", "not_before": AT + 5}, AT),
        events.rejected(queued, "Kafka said no", AT + 1),
        events.cancelled("j1", "t", AT, "cancelled before due"),
        events.job_event(child, JobState.completed, AT, worker="w1", result={"ok": True}),
        events.job_event(child, JobState.progress, AT, progress={"percent": 50, "message": None}),
    ]


@pytest.mark.parametrize("event", _all(), ids=lambda e: f"{e['state']}")
def test_every_event_fits_the_documented_model(event: events.Event) -> None:
    """Each constructor's event validates as a `StatusEvent`, with the common fields set."""
    model = StatusEvent.model_validate(event)
    assert (model.job_id, model.state.value, model.at) == (event["job_id"], event["state"], event["at"])


def test_a_follow_ups_events_name_its_parent_and_attempt() -> None:
    """Events about a follow-up carry `parent_id`; a job's attempt comes from its envelope."""
    event = events.job_event(_job(parent_id="p1", attempt=3), JobState.active, AT, worker="w")
    assert event == {"job_id": "j1", "type": "images.resize", "state": "active", "attempt": 3, "at": AT,
                     "worker": "w", "parent_id": "p1"}  # fmt: skip
    assert "parent_id" not in events.job_event(_job(), JobState.active, AT)


def test_scheduled_and_fired_carry_the_due_time() -> None:
    """`scheduled` says when the job is due (ms and RFC 3339); the fired `queued` event is
    stamped with the due time, or with now when the scheduler fires it late."""
    due = AT + 5_000
    scheduled = events.scheduled(_job(not_before=due), AT)
    assert (scheduled["due_at"], scheduled["run_at"]) == (due, rfc3339(due))
    assert events.fired({"id": "j", "type": "t", "not_before": due}, AT)["at"] == due
    assert events.fired({"id": "j", "type": "t", "not_before": due}, due + 7)["at"] == due + 7


def test_rejected_ends_the_announced_job_with_a_reason() -> None:
    """`rejected` turns the announcing event into `dead`/`rejected` with the message."""
    event = events.rejected(events.queued(_job(), AT), "Redis did not store it", AT + 1)
    assert (event["state"], event["reason"], event["at"]) == ("dead", "rejected", AT + 1)
    assert event["error"] == {"type": "Rejected", "message": "Redis did not store it"}
