"""The projection's merge of status events into a job's fields (pure: no Redis)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobstream.projection import TIMELINE_MAX, Projection, merge
from jobstream.settings import Settings
from schemas import state_rank


def event(state: str, at: int, attempt: int = 1, **extra: Any) -> dict[str, Any]:
    return {"job_id": "j", "type": "t", "state": state, "attempt": attempt, "at": at, **extra}


def merged(*events: dict[str, Any]) -> dict[str, Any]:
    into: dict[str, Any] = {"fields": {}}
    for e in events:
        merge(into, e)
    return into


def test_later_states_win_and_created_at_is_the_first() -> None:
    """Each state moves the job on; `created_at` is the first event's, `updated_at` the last's."""
    m = merged(
        event("queued", 10, created_at=5), event("active", 20), event("completed", 30, result={"ok": 1})
    )
    assert m["rank"] == state_rank("completed", 1)
    assert m["created_at"] == 5
    f = m["fields"]
    assert (f["state"], f["type"], f["attempt"], f["updated_at"], f["result"]) == (
        "completed",
        "t",
        1,
        30,
        {"ok": 1},
    )


def test_created_at_defaults_to_the_first_events_time() -> None:
    """Without `created_at`, the first event's `at` is the job's creation time."""
    assert merged(event("queued", 10), event("active", 20))["created_at"] == 10


def test_an_event_ranking_below_is_ignored() -> None:
    """A `queued` arriving after `active` (racing writers) leaves the job active."""
    m = merged(event("active", 20), event("queued", 10))
    assert m["fields"]["state"] == "active" and m["fields"]["updated_at"] == 20
    assert m["rank"] == state_rank("active", 1)


def test_a_held_rank_is_not_moved_backwards() -> None:
    """Merging into what already ranks higher (another attempt) changes nothing."""
    into: dict[str, Any] = {"rank": state_rank("active", 2), "created_at": 1, "fields": {"state": "active"}}
    merge(into, event("failed", 50, attempt=1, error={"type": "E", "message": "late"}))
    assert into == {"rank": state_rank("active", 2), "created_at": 1, "fields": {"state": "active"}}


def test_progress_shows_as_active_and_completed_fills_it() -> None:
    """`progress` keeps the job `active` with its progress; `completed` makes it 100 %, keeping
    the last message."""
    m = merged(event("active", 1), event("progress", 2, progress={"percent": 40.0, "message": "half"}))
    assert m["fields"]["state"] == "active" and m["fields"]["progress"] == {
        "percent": 40.0,
        "message": "half",
    }
    merge(m, event("completed", 3))
    assert m["fields"]["progress"] == {"percent": 100.0, "message": "half"}
    assert merged(event("completed", 3))["fields"]["progress"] == {"percent": 100.0, "message": None}


def test_a_new_attempt_clears_the_error() -> None:
    """A retry's `active` clears the failed attempt's error; a later error is kept."""
    err = {"type": "E", "message": "boom"}
    m = merged(event("failed", 1, error=err), event("retrying", 2, error=err))
    assert m["fields"]["error"] == err
    merge(m, event("active", 3, attempt=2))
    assert m["fields"]["error"] is None and m["fields"]["attempt"] == 2


def test_optional_fields_are_written_only_when_given() -> None:
    """`result`, `error`, `parent_id`, `children` and `reason` are set when present, not nulled
    by a later event that leaves them out."""
    m = merged(event("queued", 1, parent_id="p", children=["c1"]), event("dead", 2, reason="expired"))
    f = m["fields"]
    assert (f["parent_id"], f["children"], f["reason"]) == ("p", ["c1"], "expired")
    assert "result" not in f and "error" not in f


async def test_the_projectors_writes_keep_a_timeline_of_the_newest_events(
    redis: Redis, settings: Settings
) -> None:
    """Every event applied with `timeline` is appended whatever its rank (a late `queued`
    included), with the error's type and message but not its traceback; the newest
    `TIMELINE_MAX` are kept; writes without `timeline` (the API's) append nothing."""
    p = Projection(redis, settings.redis_prefix, 3600)
    error = {"type": "RuntimeError", "message": "no", "traceback": "Traceback ..."}
    await p.apply([{"job_id": "j1", "type": "t", "state": "queued", "attempt": 1, "at": 1}])
    assert await p.events("j1") == []
    await p.apply(
        [
            {"job_id": "j1", "type": "t", "state": "active", "attempt": 1, "at": 2, "worker": "w:1"},
            {"job_id": "j1", "type": "t", "state": "failed", "attempt": 1, "at": 3, "error": error},
            {"job_id": "j2", "type": "t", "state": "queued", "attempt": 1, "at": 4},
        ],
        timeline=True,
    )
    await p.apply([{"job_id": "j1", "type": "t", "state": "queued", "attempt": 1, "at": 1}], timeline=True)
    assert await p.events("j1") == [
        {"state": "active", "attempt": 1, "at": 2, "worker": "w:1"},
        {"state": "failed", "attempt": 1, "at": 3, "error": {"type": "RuntimeError", "message": "no"}},
        {"state": "queued", "attempt": 1, "at": 1},
    ]
    assert (await p.get("j1") or {})["state"] == "failed"  # the late queued did not move it back
    many = [
        {"job_id": "j3", "type": "t", "state": "progress", "attempt": 1, "at": i}
        for i in range(TIMELINE_MAX + 7)
    ]
    await p.apply(many, timeline=True)
    kept = await p.events("j3")
    assert len(kept) == TIMELINE_MAX and kept[0]["at"] == 7 and kept[-1]["at"] == TIMELINE_MAX + 6
