"""The subscription index (pure): who wants which status event, without sockets or queues."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.errors import ProtocolError
from gateway.protocol import Selection
from gateway.subscriptions import Subscriptions, wants


@dataclass(eq=False)
class Sub:
    """A client as the index sees it: a selection, hashed by identity."""

    name: str
    jobs: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    all: bool = False
    sees: Callable[[str], bool] | None = None


def ev(job_id: str, type_: Any = "t1") -> dict[str, Any]:
    return {"job_id": job_id, "type": type_, "state": "queued"}


def test_match_gives_each_subscriber_its_events_once_in_order() -> None:
    """A job and a type subscription that both match an event deliver it once; `all` is apart."""
    index: Subscriptions[Sub] = Subscriptions()
    a, b, c, d = Sub("a"), Sub("b"), Sub("c"), Sub("d")
    index.subscribe(a, Selection(jobs=["j1"], types=["t1"]))
    index.subscribe(b, Selection(all=True, jobs=["j1"]))
    index.subscribe(c, Selection(types=["t2"]))
    index.subscribe(d, Selection(types=["t9"]))
    evs = [ev("j1"), ev("j2"), ev("j3", "t2"), ev("j1", None), ev("j4", 7)]
    assert index.match(evs) == {a: [evs[0], evs[1], evs[3]], c: [evs[2]]}
    assert index.everyone == {b}


def test_match_agrees_with_wants() -> None:
    """Through any subscribe/unsubscribe/forget history, `match` is `wants` applied per subscriber."""
    rng = random.Random(9)
    jobs, types = [f"j{i}" for i in range(8)], [f"t{i}" for i in range(4)]
    for _ in range(200):
        index: Subscriptions[Sub] = Subscriptions()
        subs = [Sub(f"s{i}") for i in range(5)]
        subs[3].sees = {"t0", "t1"}.__contains__  # API keys limited to some types
        subs[4].sees = {"t2"}.__contains__
        for _ in range(rng.randrange(1, 15)):
            sub = rng.choice(subs)
            sel = Selection(
                jobs=rng.sample(jobs, rng.randrange(3)),
                types=rng.sample(types, rng.randrange(2)),
                all=rng.random() < 0.15,
            )
            op = rng.random()
            if op < 0.65:
                try:
                    index.subscribe(sub, sel)
                except ProtocolError:  # a type its key may not see: nothing subscribed
                    assert sub.sees is not None and not all(sub.sees(t) for t in sel.types)
            elif op < 0.9:
                index.unsubscribe(sub, sel)
            else:
                index.forget(sub)
        evs = [ev(rng.choice(jobs), rng.choice([*types, None, 3])) for _ in range(rng.randrange(12))]
        everyone = {s for s in subs if s.all and s.sees is None}  # they share one frame, apart
        expected = {s: [e for e in evs if wants(s, e)] for s in subs if s not in everyone}
        assert index.match(evs) == {s: got for s, got in expected.items() if got}
        assert index.everyone == everyone
        assert index.limited_all == {s for s in subs if s.all and s.sees is not None}
        jobs_followed, types_followed = {j for s in subs for j in s.jobs}, {t for s in subs for t in s.types}
        assert index.counts() == {
            "all": sum(s.all for s in subs),
            "jobs": len(jobs_followed),
            "types": len(types_followed),
        }


def test_a_key_limited_to_some_types_sees_only_those() -> None:
    """Whatever it follows (everything, a job, a type), a subscriber limited to `images.*`
    gets no event of another type; a type outside its patterns is refused, nothing added."""
    index: Subscriptions[Sub] = Subscriptions()
    limited = Sub("limited", sees=lambda t: t.startswith("images."))
    index.subscribe(limited, Selection(all=True, jobs=["j2"]))
    with pytest.raises(ProtocolError, match=r"video\.encode") as refused:
        index.subscribe(limited, Selection(types=["video.encode"], jobs=["j9"]))
    assert refused.value.code == "forbidden" and "j9" not in limited.jobs
    evs = [ev("j1", "images.resize"), ev("j2", "video.encode"), ev("j3", "images.crop")]
    assert index.match(evs) == {limited: [evs[0], evs[2]]}
    assert index.everyone == set()


def test_unsubscribe_and_forget_empty_the_index() -> None:
    """Unsubscribing what was followed, or forgetting a subscriber, leaves nothing behind."""
    index: Subscriptions[Sub] = Subscriptions()
    a, b = Sub("a"), Sub("b")
    index.subscribe(a, Selection(jobs=["j1", "j2"], types=["t1"], all=True))
    index.subscribe(b, Selection(jobs=["j2"], types=["t1"]))
    index.unsubscribe(a, Selection(jobs=["j1", "j2", "j9"], types=["t1"], all=True))
    assert (a.jobs, a.types, a.all) == (set(), set(), False)
    assert index.counts() == {"all": 0, "jobs": 1, "types": 1}
    index.forget(b)
    index.forget(b)  # idempotent
    assert (b.jobs, b.types, b.all) == (set(), set(), False)
    assert index.counts() == {"all": 0, "jobs": 0, "types": 0}
    assert index.match([ev("j2")]) == {}


def test_job_cap_refuses_the_whole_selection() -> None:
    """Past `max_jobs` new job ids, subscribe raises too_many_jobs and adds nothing; known ids are free."""
    index: Subscriptions[Sub] = Subscriptions(max_jobs=3)
    a = Sub("a")
    index.subscribe(a, Selection(jobs=["j1", "j2"]))
    index.subscribe(a, Selection(jobs=["j1", "j2", "j3"]))
    with pytest.raises(ProtocolError) as caught:
        index.subscribe(a, Selection(jobs=["j4"], types=["t1"]))
    assert caught.value.code == "too_many_jobs" and "at most 3" in str(caught.value)
    assert (a.jobs, a.types) == ({"j1", "j2", "j3"}, set())
    assert index.counts() == {"all": 0, "jobs": 3, "types": 0}
