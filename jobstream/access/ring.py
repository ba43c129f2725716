"""Where keys are kept and how a presented key is checked: `KeyRing`.

Keys live in the settings (`JOBSTREAM_API_KEYS`, a JSON list of records: a small setup,
or keys that must work while Redis is down) and in Redis (the hash `{prefix}:api-keys`,
one JSON record per key id, managed with `jobstream keys create|list|revoke`). A key in
both is the settings' one.

Checking costs one dictionary lookup on the hot path: a key once checked is remembered
(by the key itself, with its principal) for `cache_s`, so a revoked key stops working
within that time on every process; a key not found is remembered for a second, so a
client hammering with a wrong key costs Redis one lookup a second. Browser WebSocket
tokens (`POST /ws-token`) are kept in Redis too: any gateway replica accepts them.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobstream.access.keys import KeyError_, KeyRecord, Principal, split_key

if TYPE_CHECKING:
    from jobstream.settings import ServerSettings

log = logging.getLogger("jobstream.access")

CACHE_MAX = 10_000  # keys remembered at once
MISS_S = 1.0  # how long a key not found is remembered as such
TOKEN_BYTES = 24


class KeysUnavailable(Exception):
    """Redis, where the key would be, cannot answer: neither yes nor no."""


def static_records(entries: list[dict[str, Any]]) -> dict[str, KeyRecord]:
    """The settings' key records by id; raises `KeyError_` naming a bad one."""
    records: dict[str, KeyRecord] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KeyError_(f"JOBSTREAM_API_KEYS item {i} is not a JSON object")
        record = KeyRecord.from_dict(entry)
        records[record.id] = record
    return records


class KeyRing:
    """The keys of one deployment: `principal(key)` answers who a key is, or None."""

    def __init__(
        self, static: dict[str, KeyRecord], redis: Redis | None, redis_prefix: str, cache_s: float = 10.0
    ) -> None:
        """`redis` may come later (`connect`), when the app's lifespan has opened it."""
        self._static = static
        self._redis = redis
        self._hash = f"{redis_prefix}:api-keys"
        self._tokens = f"{redis_prefix}:ws-token:"
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @classmethod
    def of(cls, settings: ServerSettings, redis: Redis | None = None) -> KeyRing:
        return cls(static_records(settings.api_keys), redis, settings.redis_prefix, settings.auth_cache_s)

    def connect(self, redis: Redis) -> None:
        self._redis = redis

    async def principal(self, key: str) -> Principal | None:
        """The principal of `key`, or None for a key that is malformed, unknown or revoked.
        Raises `KeysUnavailable` when only Redis could say."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._look_up(key)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (now + (self._cache_s if found is not None else MISS_S), found)
        return found

    async def _look_up(self, key: str) -> Principal | None:
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        record = self._static.get(key_id)
        if record is None:
            record = await self.record(key_id)
        if record is None or not record.matches(secret):
            return None
        return Principal.of(record)

    async def record(self, key_id: str) -> KeyRecord | None:
        """The stored record of `key_id` in Redis (None: no such key)."""
        if self._redis is None:
            return None
        try:
            raw = await self._redis.hget(self._hash, key_id)
        except (RedisError, OSError) as exc:
            raise KeysUnavailable(f"Redis cannot answer ({exc})") from exc
        if raw is None:
            return None
        try:
            return KeyRecord.from_dict(json.loads(raw))
        except (ValueError, KeyError_) as exc:
            log.warning("unreadable key record id=%s error=%s", key_id, exc)
            return None

    # -- managing keys (`jobstream keys`) --------------------------------------------------

    async def add(self, record: KeyRecord) -> None:
        assert self._redis is not None, "keys are added to Redis"
        await self._redis.hset(self._hash, record.id, json.dumps(record.as_dict()))

    async def stored(self) -> list[KeyRecord]:
        """Every key record in Redis, oldest first."""
        assert self._redis is not None
        records = []
        for key_id, raw in (await self._redis.hgetall(self._hash)).items():
            try:
                records.append(KeyRecord.from_dict(json.loads(raw)))
            except (ValueError, KeyError_) as exc:
                log.warning("unreadable key record id=%r error=%s", key_id, exc)
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def configured(self) -> list[KeyRecord]:
        """The keys from the settings."""
        return list(self._static.values())

    async def revoke(self, key_id: str) -> bool:
        """Remove `key_id` from Redis; False when it was not there."""
        assert self._redis is not None
        return bool(await self._redis.hdel(self._hash, key_id))

    # -- WebSocket tokens ----------------------------------------------------------------

    async def issue_token(self, principal: Principal, ttl_s: int) -> str:
        """A one-time token standing for `principal`'s key for `ttl_s` (for browsers, which
        cannot set headers on a WebSocket)."""
        if self._redis is None:
            raise KeysUnavailable("WebSocket tokens are kept in Redis, which this process has not")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            await self._redis.set(self._tokens + token, principal.key_id, ex=ttl_s)
        except (RedisError, OSError) as exc:
            raise KeysUnavailable(f"Redis cannot answer ({exc})") from exc
        return token

    async def redeem_token(self, token: str) -> Principal | None:
        """The principal a token stands for, once: the token is gone afterwards. None for a
        token unknown, used or expired, or whose key was revoked since."""
        if self._redis is None or not 16 <= len(token) <= 64:
            return None
        try:
            key_id = await self._redis.getdel(self._tokens + token)
        except (RedisError, OSError) as exc:
            raise KeysUnavailable(f"Redis cannot answer ({exc})") from exc
        if key_id is None:
            return None
        key_id = key_id.decode() if isinstance(key_id, bytes) else str(key_id)
        record = self._static.get(key_id) or await self.record(key_id)
        return None if record is None else Principal.of(record)
