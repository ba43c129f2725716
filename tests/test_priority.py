"""Priority selection with aging, and the dispatch buffer (ordered keys, copies, pauses)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from consumer.dispatch import Dispatch
from consumer.priority import PrioritySelector

HIGH, NORMAL, LOW = 0, 1, 2
_IDS = itertools.count()  # each `It` a job of its own unless told


def test_high_starts_before_normal_before_low() -> None:
    """Records waiting equally long start in priority order."""
    s: PrioritySelector[str] = PrioritySelector(aging_ms=1000)
    s.push(LOW, "low", 0)
    s.push(NORMAL, "normal", 0)
    s.push(HIGH, "high", 0)
    assert [s.pop(0), s.pop(0), s.pop(0), s.pop(0)] == ["high", "normal", "low", None]


def test_fifo_within_a_priority() -> None:
    """Records of one priority start in arrival order."""
    s: PrioritySelector[int] = PrioritySelector(aging_ms=1000)
    for i in range(5):
        s.push(NORMAL, i, i)
    assert [s.pop(10) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_aging_lifts_a_waiting_low_record() -> None:
    """A low record that waited two aging periods competes as high and wins the tie by age."""
    s: PrioritySelector[str] = PrioritySelector(aging_ms=100)
    s.push(LOW, "old-low", 0)
    s.push(HIGH, "new-high", 200)
    # at 200 ms: low's rank is 2 - 2 = 0, high's is 0; a tie goes to the higher priority
    assert s.pop(200) == "new-high"
    s.push(HIGH, "newer-high", 250)
    # at 350 ms: low's rank is 2 - 3 = -1, beating high's 0
    assert s.pop(349) == "old-low"


def test_steady_high_stream_does_not_starve_low() -> None:
    """With a new high record every tick, a low record still starts within a bounded wait."""
    s: PrioritySelector[str] = PrioritySelector(aging_ms=10)
    s.push(LOW, "low", 0)
    started_at = None
    for now in range(1000):
        s.push(HIGH, f"h{now}", now)
        if s.pop(now) == "low":
            started_at = now
            break
    assert started_at is not None and started_at <= 30


def test_remove_if_drops_matching_items() -> None:
    """remove_if returns the matching items; the rest still start in priority order, FIFO within one."""
    s: PrioritySelector[int] = PrioritySelector(aging_ms=1000)
    for i in range(9):
        s.push(i % 3, i, 0)  # levels: 0, 3, 6 high; 1, 4, 7 normal; 2, 5, 8 low
    assert sorted(s.remove_if(lambda i: i % 2 == 0)) == [0, 2, 4, 6, 8]
    assert len(s) == 4
    assert [s.pop(0) for _ in range(5)] == [3, 1, 7, 5, None]
    assert len(s) == 0


@dataclass(eq=False)
class It:
    tp: str
    level: int
    order_key: str | None
    name: str = ""
    limit_key: str | None = None
    job_id: str = field(default_factory=lambda: f"job-{next(_IDS)}")


def test_ordered_key_runs_one_at_a_time_in_order() -> None:
    """Records sharing an ordered key start one after another, in arrival order."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    a, b, c = It("p0", NORMAL, "k", "a"), It("p0", NORMAL, "k", "b"), It("p0", NORMAL, "k", "c")
    other = It("p1", NORMAL, None, "other")
    for i in (a, b, c, other):
        d.add(i, 0)
    assert d.take(0) is a
    assert d.take(0) is other  # b waits for a
    assert d.take(0) is None
    d.finished(a, 1)
    assert d.take(1) is b
    d.finished(b, 2)
    assert d.take(2) is c


def test_copies_waiting_behind_their_job_are_handed_back_when_it_ends() -> None:
    """Two records of one job (same id, same order key): the second waits, and once the
    first ended it leaves the buffer unstarted; the next other record of the key starts."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    first, other, copy = (
        It("p0", NORMAL, "k", job_id="j"),
        It("p0", NORMAL, "k"),
        It("p0", NORMAL, "k", job_id="j"),
    )
    for i in (first, other, copy):
        d.add(i, 0)
    assert d.take(0) is first and d.take(0) is None
    assert d.finished(first, 1) == [copy]
    assert d.buffered("p0") == 1
    assert d.take(1) is other
    assert d.finished(other, 2) == [] and d.take(2) is None and len(d) == 0


def test_copies_of_an_aborted_job_still_run() -> None:
    """A job aborted (left for redelivery, no outcome): its waiting copy runs after it."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    first, copy = It("p0", NORMAL, "k", job_id="j"), It("p0", NORMAL, "k", job_id="j")
    d.add(first, 0)
    d.add(copy, 0)
    assert d.take(0) is first
    assert d.finished(first, 1, ended=False) == []
    assert d.take(1) is copy
    assert d.finished(copy, 2) == [] and d.buffered("p0") == 0


def test_a_revoke_frees_the_key_of_a_record_waiting_for_a_rate_limit_token() -> None:
    """A record held for want of a token owns its key: dropped on a revoke, it frees it, so
    the same record fetched again after the partition comes back runs."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    held = It("p0", NORMAL, "k", job_id="j", limit_key="limited")
    d.add(held, 0)
    assert d.take(0) is None  # no token
    assert d.drop({"p0"}) == [held]
    again = It("p0", NORMAL, "k", job_id="j", limit_key="limited")
    d.add(again, 1)
    d.grant("limited", 1, 2)
    assert d.take(2) is again


def test_a_revoke_drops_waiting_copies_and_hands_the_key_on() -> None:
    """Copies waiting on a revoked partition go with it; a record of the key from another
    partition takes the key over, and when it ends nothing is left."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    first, copy = It("p0", NORMAL, "k", job_id="j"), It("p0", NORMAL, "k", job_id="j")
    survivor = It("p1", NORMAL, "k")
    for i in (first, copy, survivor):
        d.add(i, 0)
    assert sorted(id(i) for i in d.drop({"p0"})) == sorted(id(i) for i in (first, copy))
    assert d.take(0) is survivor
    assert d.finished(survivor, 1) == [] and d.take(1) is None
    assert d.buffered("p0") == 0 and d.buffered("p1") == 0


def test_full_partition_is_paused_and_resumed_at_half() -> None:
    """A partition pauses when its buffer is full and resumes once half has drained."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=4)
    for _ in range(4):
        d.add(It("p0", NORMAL, None), 0)
    assert d.pause_changes({"p0"}) == (["p0"], [])
    d.take(0)
    assert d.pause_changes({"p0"}) == ([], [])
    d.take(0)
    assert d.pause_changes({"p0"}) == ([], ["p0"])


def test_drop_forgets_a_revoked_partition() -> None:
    """Dropping a partition removes its buffered records and hands keys to survivors."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=10)
    first, survivor = It("p0", NORMAL, "k"), It("p1", NORMAL, "k")
    d.add(first, 0)
    d.add(survivor, 0)
    assert d.drop({"p0"}) == [first]
    assert d.buffered("p0") == 0
    assert d.take(0) is survivor


def test_due_clock_holds_a_retry_partition_until_its_head_is_due() -> None:
    """A record not yet due waits, and so does everything behind it on its partition; others run."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    later, behind, other = (
        It("r0", NORMAL, None, "later"),
        It("r0", NORMAL, None, "behind"),
        It("p1", NORMAL, None),
    )
    d.add(later, 0, due_ms=1_500, wall_ms=1_000)
    d.add(behind, 0, due_ms=900, wall_ms=1_000)  # due, but behind a record that is not
    d.add(other, 0)
    assert d.take(0) is other and d.take(0) is None
    assert d.release(0, 1_499) == 1_500  # nothing due yet: wake at 1,500
    assert d.take(0) is None
    assert d.release(0, 1_500) is None
    assert [d.take(0), d.take(0)] == [later, behind]
    assert d.buffered("r0") == 0


def test_held_records_count_toward_the_pause_and_are_dropped_on_revoke() -> None:
    """Records waiting for their due time fill the buffer like any other; a revoke drops them."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=2)
    a, b = It("r0", NORMAL, None), It("r0", NORMAL, None)
    d.add(a, 0, due_ms=5_000, wall_ms=0)
    d.add(b, 0, due_ms=5_000, wall_ms=0)
    assert d.pause_changes({"r0"}) == (["r0"], [])
    assert d.drop({"r0"}) == [a, b]
    assert d.release(0, 10_000) is None and d.take(0) is None


def test_rate_limited_type_is_held_without_blocking_others() -> None:
    """With no token, a limited type's records are held aside; other types start; tokens release them."""
    d: Dispatch[It] = Dispatch(aging_ms=1000, buffer_limit=100)
    limited = [It("p0", NORMAL, None, f"l{i}", limit_key="mail") for i in range(3)]
    free = It("p1", NORMAL, None, "free")
    for item in [*limited, free]:
        d.add(item, 0)
    assert d.take(0) is free
    assert d.take(0) is None
    assert d.starved() == {"mail": 3}
    assert d.buffered("p0") == 3  # held records still fill the buffer: the partition can pause
    d.grant("mail", 2, 1)
    assert [d.take(1), d.take(1), d.take(1)] == [limited[0], limited[1], None]
    assert d.starved() == {"mail": 1}
