"""The per-partition offset tracker: commit only below the lowest unfinished record."""

from __future__ import annotations

import random

import pytest

from consumer.offsets import OffsetTracker


def test_empty_tracker_has_nothing_to_commit() -> None:
    """A tracker that saw no record commits nothing."""
    assert OffsetTracker().commit_point() is None


def test_commit_point_stops_at_lowest_unfinished() -> None:
    """Finishing later offsets first does not move the commit point past an earlier one."""
    t = OffsetTracker()
    for o in range(10, 15):
        t.add(o)
    t.done(12)
    t.done(13)
    assert t.commit_point() == 10
    t.done(10)
    assert t.commit_point() == 11
    t.done(11)
    assert t.commit_point() == 14
    t.done(14)
    assert t.commit_point() == 15
    assert t.in_flight == 0


def test_committed_point_is_not_offered_again() -> None:
    """After `committed(p)`, the same point is not returned until it moves."""
    t = OffsetTracker()
    t.add(0)
    t.done(0)
    assert t.commit_point() == 1
    t.committed(1)
    assert t.commit_point() is None
    t.add(1)
    assert t.commit_point() is None
    t.done(1)
    assert t.commit_point() == 2


def test_gaps_in_offsets_are_fine() -> None:
    """Compacted or transactional topics skip offsets; the tracker follows what it saw."""
    t = OffsetTracker()
    t.add(5)
    t.add(9)
    t.done(9)
    assert t.commit_point() == 5
    t.done(5)
    assert t.commit_point() == 10


def test_offsets_must_increase() -> None:
    """Adding an offset below one already added is refused."""
    t = OffsetTracker()
    t.add(3)
    with pytest.raises(ValueError, match="must increase"):
        t.add(2)


def test_done_of_unknown_offset_is_ignored() -> None:
    """Marking an offset never added, or twice, changes nothing."""
    t = OffsetTracker()
    t.add(0)
    t.done(7)
    t.done(0)
    t.done(0)
    assert t.commit_point() == 1


def test_random_completion_order_matches_a_model() -> None:
    """Under any completion order the commit point equals the lowest unfinished offset."""
    rng = random.Random(7)
    for _ in range(200):
        t = OffsetTracker()
        offsets = list(range(rng.randint(1, 60)))
        for o in offsets:
            t.add(o)
        order = offsets[:]
        rng.shuffle(order)
        unfinished = set(offsets)
        for o in order:
            t.done(o)
            unfinished.discard(o)
            expect = min(unfinished) if unfinished else len(offsets)
            assert t.commit_point() in (expect, None)
            if t.commit_point() is not None:
                t.committed(expect)
