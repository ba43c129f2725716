"""What the worker buffers, what starts next, and which partitions to pause.

`Dispatch` is pure (no I/O, time passed in): it holds fetched records that have not
started, hands them out by priority with aging (`PrioritySelector`), keeps records of
`ordered` job types that share a key running one at a time in arrival order (and copies
of one job likewise: the copies waiting when the first ends are handed back, not run), holds retry
records until their due time (the due clock: a partition's records wait in log order
behind its first record not yet due, and `release` lets them go at their time), and
counts records buffered per partition so that the worker pauses a partition whose buffer
is full and resumes it once half of it has drained.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, Protocol, TypeVar

from consumer.priority import PrioritySelector


class Dispatchable(Protocol):
    @property
    def tp(self) -> Hashable: ...
    @property
    def level(self) -> int: ...
    @property
    def order_key(self) -> str | None: ...
    @property
    def limit_key(self) -> str | None: ...
    @property
    def job_id(self) -> str: ...


class _Gate:
    """A rate-limited job type: tokens in hand, and records that found none."""

    __slots__ = ("held", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.held: deque[Any] = deque()


ItemT = TypeVar("ItemT", bound=Dispatchable)


class Dispatch(Generic[ItemT]):
    def __init__(self, aging_ms: float, buffer_limit: int) -> None:
        self._selector: PrioritySelector[ItemT] = PrioritySelector(aging_ms)
        self._limit = buffer_limit
        self._buffered: dict[Hashable, int] = {}
        self._paused: set[Hashable] = set()
        self._owner: dict[str, ItemT | None] = {}  # ordered key -> its queued or running item
        self._waiting: dict[str, deque[tuple[float, ItemT]]] = {}  # later items of a busy key
        self._waiting_ids: dict[str, int] = {}  # job id -> its items in `_waiting`
        self._not_due: dict[Hashable, deque[tuple[int, ItemT]]] = {}  # per partition, in log order
        self._gates: dict[str, _Gate] = {}  # rate-limited types

    def __len__(self) -> int:
        return len(self._selector)

    def buffered(self, tp: Hashable) -> int:
        return self._buffered.get(tp, 0)

    def add(self, item: ItemT, now_ms: float, due_ms: int | None = None, wall_ms: int = 0) -> None:
        """Buffer a fetched record. One due after `wall_ms` (or behind one that is) waits
        for `release`; `now_ms` is the monotonic clock that aging counts on."""
        tp = item.tp
        self._buffered[tp] = self._buffered.get(tp, 0) + 1
        held = self._not_due.get(tp)
        if held or (due_ms is not None and due_ms > wall_ms):
            self._not_due.setdefault(tp, deque()).append((due_ms or 0, item))
            return
        self._enqueue(item, now_ms)

    def release(self, now_ms: float, wall_ms: int) -> int | None:
        """Let every held record now due go on; the wall time the next one is due, or None."""
        nxt: int | None = None
        for tp in list(self._not_due):
            held = self._not_due[tp]
            while held and held[0][0] <= wall_ms:
                self._enqueue(held.popleft()[1], now_ms)
            if held:
                nxt = held[0][0] if nxt is None else min(nxt, held[0][0])
            else:
                del self._not_due[tp]
        return nxt

    def _enqueue(self, item: ItemT, now_ms: float) -> None:
        key = item.order_key
        if key is not None:
            if key in self._owner:
                self._waiting.setdefault(key, deque()).append((now_ms, item))
                self._waiting_ids[item.job_id] = self._waiting_ids.get(item.job_id, 0) + 1
                return
            self._owner[key] = item
        self._selector.push(item.level, item, now_ms)

    def take(self, now_ms: float) -> ItemT | None:
        """The record to start now, or None. A record of a rate-limited type with no token
        in hand is held aside (still buffered, so its partition pauses when full) and the
        next record is tried: it holds no runner."""
        while (item := self._selector.pop(now_ms)) is not None:
            key = item.limit_key
            if key is not None:
                gate = self._gates.setdefault(key, _Gate())
                if gate.tokens <= 0:
                    gate.held.append(item)
                    continue
                gate.tokens -= 1
            self._buffered[item.tp] -= 1
            return item
        return None

    def starved(self) -> dict[str, int]:
        """Rate-limited types with records held and no token: how many records each holds."""
        return {key: len(g.held) for key, g in self._gates.items() if g.held and g.tokens <= 0}

    def grant(self, key: str, tokens: int, now_ms: float) -> None:
        """Tokens for a rate-limited type: as many held records go back in line."""
        gate = self._gates.setdefault(key, _Gate())
        gate.tokens += tokens
        for _ in range(min(tokens, len(gate.held))):
            item = gate.held.popleft()
            self._selector.push(item.level, item, now_ms)

    def finished(self, item: ItemT, now_ms: float, ended: bool = True) -> list[ItemT]:
        """A started record is over: let the next record with its key start. When it `ended`
        (an outcome is on its way, not aborted), the records of the same job waiting behind
        it are copies whose work is done: they leave the buffer and are returned, unstarted."""
        key = item.order_key
        if key is None:
            return []
        waiting = self._waiting.get(key)
        copies: list[ItemT] = []
        if waiting and ended and item.job_id in self._waiting_ids:
            copies = [it for _, it in waiting if it.job_id == item.job_id]
            waiting = deque(e for e in waiting if e[1].job_id != item.job_id)
            for copy in copies:
                self._buffered[copy.tp] -= 1
                self._unwait(copy)
        if waiting:
            queued_at, nxt = waiting.popleft()
            self._unwait(nxt)
            self._owner[key] = nxt
            self._selector.push(nxt.level, nxt, queued_at)
        else:
            self._owner.pop(key, None)
        if waiting:
            self._waiting[key] = waiting
        else:
            self._waiting.pop(key, None)
        return copies

    def _unwait(self, item: ItemT) -> None:
        """`item` left `_waiting`."""
        n = self._waiting_ids[item.job_id] - 1
        if n:
            self._waiting_ids[item.job_id] = n
        else:
            del self._waiting_ids[item.job_id]

    def drop(self, tps: set[Hashable]) -> list[ItemT]:
        """Remove every buffered record of `tps` (revoked, or shutting down)."""
        dropped = self._selector.remove_if(lambda it: it.tp in tps)
        for key in list(self._waiting):
            kept = deque(e for e in self._waiting[key] if e[1].tp not in tps)
            gone = [e[1] for e in self._waiting[key] if e[1].tp in tps]
            for item in gone:
                self._unwait(item)
            dropped.extend(gone)
            if kept:
                self._waiting[key] = kept
            else:
                del self._waiting[key]
        for gate in self._gates.values():  # before the owners: a held record may own its key
            dropped.extend(i for i in gate.held if i.tp in tps)
            gate.held = deque(i for i in gate.held if i.tp not in tps)
        for item in dropped:
            okey = item.order_key
            if okey is not None and self._owner.get(okey) is item:
                del self._owner[okey]
                waiting = self._waiting.pop(okey, None)
                if waiting:  # a survivor of another partition takes over the key
                    queued_at, nxt = waiting.popleft()
                    self._unwait(nxt)
                    self._owner[okey] = nxt
                    self._selector.push(nxt.level, nxt, queued_at)
                    if waiting:
                        self._waiting[okey] = waiting
        for tp in tps:
            dropped.extend(e[1] for e in self._not_due.pop(tp, ()))
            self._buffered.pop(tp, None)
            self._paused.discard(tp)
        return dropped

    def pause_changes(self, tps: set[Hashable]) -> tuple[list[Hashable], list[Hashable]]:
        """Of `tps`, those to pause now (buffer full) and those to resume (half drained)."""
        pause: list[Hashable] = []
        resume: list[Hashable] = []
        for tp in tps:
            n = self._buffered.get(tp, 0)
            if tp in self._paused:
                if n <= self._limit // 2:
                    self._paused.discard(tp)
                    resume.append(tp)
            elif n >= self._limit:
                self._paused.add(tp)
                pause.append(tp)
        return pause, resume

    @property
    def paused(self) -> frozenset[Hashable]:
        return frozenset(self._paused)
