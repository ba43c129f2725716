"""The job-state projection in Redis: each job's latest state, for `GET /jobs/{id}`.

One hash per job, `{prefix}:job:<id>`. Writes go through a Lua script that applies an
update only when its rank (`schemas.state_rank`) is not below the stored one, so
writers racing each other (the API's `queued`, the projector's later states) never move
a job backwards. Batches of events are coalesced per job (`merge`, pure: what one event
does to the fields to write) and pipelined.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from jobstream.redis_scripts import PipelinedScript
from schemas import JobState, state_rank

# One call applies a chunk of jobs. KEYS: the jobs' hashes, then (with a timeline) their
# event lists, in the same order (all share the prefix's hash tag, so this runs on Redis
# Cluster). ARGV[1]: ttl; ARGV[2]: a JSON array holding, per job, [rank, created_at,
# field, value, ...], all strings so cjson keeps them exact; ARGV[3] (optional): per job,
# its events as JSON strings, appended whatever their rank; ARGV[4]: events kept per job.
_APPLY = """
local jobs = cjson.decode(ARGV[2])
local n = 0
for i, j in ipairs(jobs) do
  local key = KEYS[i]
  local cur = tonumber(redis.call('HGET', key, 'rank') or '-1')
  if tonumber(j[1]) >= cur then
    if cur < 0 then redis.call('HSET', key, 'created_at', j[2]) end
    redis.call('HSET', key, 'rank', j[1], unpack(j, 3))
    redis.call('EXPIRE', key, ARGV[1])
    n = n + 1
  end
end
if ARGV[3] then
  local timelines, keep = cjson.decode(ARGV[3]), tonumber(ARGV[4])
  for i, evs in ipairs(timelines) do
    local key = KEYS[#jobs + i]
    redis.call('RPUSH', key, unpack(evs))
    redis.call('LTRIM', key, -keep, -1)
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return n
"""

# Jobs per script call: bounds how long one call holds Redis.
_CHUNK = 500

_JSON_FIELDS = ("progress", "result", "error", "children")
TIMELINE_MAX = 50  # events kept per job, the newest
# what a timeline keeps of an event (an error's traceback stays in the job's state)
_TIMELINE_FIELDS = (
    "state",
    "attempt",
    "at",
    "worker",
    "wait_ms",
    "reason",
    "progress",
    "tier",
    "due_at",
    "replay_of",
)


def job_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}"


def events_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}:events"


def timeline_entry(event: dict[str, Any]) -> bytes:
    """An event as a job's timeline keeps it: the fields above, and the error's type and message."""
    entry = {name: event[name] for name in _TIMELINE_FIELDS if event.get(name) is not None}
    error = event.get("error")
    if isinstance(error, dict):
        entry["error"] = {"type": error.get("type"), "message": error.get("message")}
    return orjson.dumps(entry)


# what an event may say of its job, kept as the latest event to say it left it
_KEPT = ("result", "error", "parent_id", "children", "reason", "priority", "key", "schedule", "occurrence_at")


def merge(into: dict[str, Any], event: dict[str, Any]) -> None:
    """Fold one event into what to write for its job: `into` is `{"fields": {}}` at first,
    then holds `rank`, `created_at` and `fields`. An event ranking below what `into` holds
    is ignored; otherwise it wins. Pure."""
    state = event["state"]
    attempt = int(event.get("attempt") or 1)
    rank = state_rank(state, attempt)
    if rank < into.get("rank", -1):
        return
    into["rank"] = rank
    into.setdefault("created_at", event.get("created_at") or event["at"])
    f = into["fields"]
    f["type"] = event.get("type", "")
    f["attempt"] = attempt
    f["updated_at"] = event["at"]
    if state == JobState.progress.value:
        f["state"] = JobState.active.value
        f["progress"] = event.get("progress")
    else:
        f["state"] = state
    if state == JobState.active.value:
        f["error"] = None
    for name in _KEPT:
        if event.get(name) is not None:
            f[name] = event[name]
    if state == JobState.queued.value:
        f["queued_at"] = event["at"]  # where `GET /jobs/{id}/record` starts looking
    if state == JobState.completed.value:
        f["progress"] = {"percent": 100.0, "message": (f.get("progress") or {}).get("message")}


class Projection:
    """Reads and writes the projection; `redis` is any asyncio Redis client."""

    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_s
        self._apply = PipelinedScript(redis, _APPLY)

    async def apply(self, events: list[dict[str, Any]], timeline: bool = False) -> None:
        """Apply a batch of status events in one pipelined round trip; with `timeline`, also
        append each to its job's event list (the projector's writes: it sees every event
        once; the API's early `queued` writes do not, or each would be there twice)."""
        merged: dict[str, dict[str, Any]] = {}
        timelines: dict[str, list[str]] = {}
        for event in events:
            merge(merged.setdefault(event["job_id"], {"fields": {}}), event)
            if timeline:
                timelines.setdefault(event["job_id"], []).append(timeline_entry(event).decode())
        if not merged:
            return
        # One script call per chunk, all chunks in one pipelined round trip: per-job
        # commands cost more in client-side packing than the writes themselves.
        items = list(merged.items())
        calls: list[tuple[list[Any], list[Any]]] = []
        for start in range(0, len(items), _CHUNK):
            keys: list[Any] = []
            rows: list[list[str]] = []
            for job_id, m in items[start : start + _CHUNK]:
                row = [str(m["rank"]), str(m["created_at"])]
                for name, value in m["fields"].items():
                    row.append(name)
                    if name in _JSON_FIELDS:
                        row.append(orjson.dumps(value).decode())
                    else:
                        row.append("" if value is None else str(value))
                keys.append(job_key(self._prefix, job_id))
                rows.append(row)
            args: list[Any] = [self._ttl, orjson.dumps(rows)]
            if timeline:
                chunk = [job_id for job_id, _ in items[start : start + _CHUNK]]
                keys.extend(events_key(self._prefix, job_id) for job_id in chunk)
                args.extend([orjson.dumps([timelines[job_id] for job_id in chunk]), TIMELINE_MAX])
            calls.append((keys, args))

        def build(pipe: Any) -> None:
            for keys, args in calls:
                self._apply.queue(pipe, keys, args)

        # merging by rank: a run again after NOSCRIPT is harmless (it fails before any
        # write, so a timeline is not appended twice)
        await self._apply.run(build)

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's timeline: its newest `TIMELINE_MAX` events, oldest first."""
        raw = await self._redis.lrange(events_key(self._prefix, job_id), 0, -1)
        return [orjson.loads(r) for r in raw]

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest state in the public shape, or None if unknown."""
        raw: dict[bytes, bytes] = await self._redis.hgetall(job_key(self._prefix, job_id))  # type: ignore[assignment]
        if not raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}

        def js(name: str) -> Any:
            v = h.get(name)
            return orjson.loads(v) if v else None

        return {
            "id": job_id,
            "type": h.get("type", ""),
            "state": h.get("state", ""),
            "attempt": int(h.get("attempt") or 1),
            "progress": js("progress"),
            "result": js("result"),
            "error": js("error"),
            "parent_id": h.get("parent_id") or None,
            "children": js("children") or [],
            "reason": h.get("reason") or None,
            "priority": h.get("priority") or None,
            "key": h.get("key") or None,
            "schedule": h.get("schedule") or None,
            "occurrence_at": int(h["occurrence_at"]) if h.get("occurrence_at") else None,
            "created_at": int(h.get("created_at") or 0),
            "queued_at": int(h["queued_at"]) if h.get("queued_at") else None,
            "updated_at": int(h.get("updated_at") or 0),
        }
