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


def test_done_twice_or_of_a_gap_does_not_change_in_flight() -> None:
    """A repeated completion, or one of an offset skipped between two added, changes no count."""
    t = OffsetTracker()
    for o in (0, 1, 5):
        t.add(o)
    t.done(0)
    t.done(0)
    t.done(3)
    assert (t.in_flight, t.commit_point()) == (2, 1)
    t.done(5)
    t.done(5)
    assert (t.in_flight, t.commit_point()) == (1, 1)
    t.done(1)
    assert (t.in_flight, t.commit_point()) == (0, 6)


def test_random_operations_match_a_model() -> None:
    """Random adds (with gaps), completions (repeated, unknown) and commits answer as a model does."""
    # The model: the commit point is the lowest unfinished offset, or one past the highest
    # added when none is; it is None exactly when that point is the one last committed.
    rng = random.Random(7)
    for _ in range(300):
        t = OffsetTracker()
        added: list[int] = []
        unfinished: set[int] = set()
        committed: int | None = None
        next_offset = rng.randint(0, 5)
        for _ in range(rng.randint(1, 80)):
            op = rng.random()
            if op < 0.4:
                t.add(next_offset)
                added.append(next_offset)
                unfinished.add(next_offset)
                next_offset += rng.choice((1, 1, 1, 2, 5))  # compacted topics skip offsets
            elif op < 0.8 and unfinished:
                o = rng.choice(sorted(unfinished))
                t.done(o)
                unfinished.discard(o)
            else:
                o = rng.randint(0, next_offset + 3)  # finished, a gap, not yet added, or unfinished
                t.done(o)
                unfinished.discard(o)
            point: int | None = None
            if added:
                point = min(unfinished) if unfinished else added[-1] + 1
            want = None if point == committed else point
            assert t.commit_point() == want
            assert t.in_flight == len(unfinished)
            if want is not None and rng.random() < 0.3:
                t.committed(want)
                committed = want
