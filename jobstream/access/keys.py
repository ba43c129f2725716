"""API keys: their form, what is stored of them, and who a key makes its bearer.

A key reads `js_<id>_<secret>`: `id` (12 hex digits) names it in lists, logs and
revocations; `secret` (256 random bits) is shown once, when the key is made, and only its
SHA-256 is stored. A slow hash (bcrypt, argon2) protects guessable passwords; a key is 256
random bits, so one SHA-256 is as safe and costs a microsecond, not 100 ms a lookup (the
same choice as GitHub's and Stripe's tokens).

A key has scopes and, optionally, job-type patterns:
- `submit`: POST /jobs and /jobs/batch;
- `read`: GET jobs, queues and dead letters, and the WebSocket feed;
- `admin`: cancel and replay, and all that `read` gives (not `submit`).
- patterns (`images.*`, shell-style: `*` and `?`): the key submits and sees only job types
  matching one of them; none means every type.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

Scope = Literal["submit", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEY_ID = re.compile(r"^[0-9a-f]{12}$")
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?-]{1,128}$")  # a job type, with * and ?
NAME = re.compile(r"^[A-Za-z0-9_.:@ -]{1,64}$")


class KeyError_(ValueError):
    """A key record, scope or pattern that cannot be: the message says which and why."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """`(id, secret)` of a key of the right form, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "js" or not KEY_ID.match(parts[1]) or len(parts[2]) < 16:
        return None
    return parts[1], parts[2]


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> tuple[Scope, ...]:
    """Scopes from `submit,read` (or a list); raises `KeyError_` naming an unknown one."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not items:
        raise KeyError_(f"a key needs at least one scope of {', '.join(SCOPES)}")
    for s in items:
        if s not in SCOPES:
            raise KeyError_(f"unknown scope {s!r}: the scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in items)


def parse_patterns(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Job-type patterns from `images.*,video.encode` (or a list); empty: every type."""
    if not text:
        return ()
    items = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    for p in items:
        if not TYPE_PATTERN.match(p):
            raise KeyError_(
                f"job-type pattern {p!r} is not valid: 1 to 128 of letters, digits, '_', '.', ':', '-', "
                "with '*' for any run of characters and '?' for one"
            )
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class KeyRecord:
    """What is stored of a key: never the key itself."""

    id: str
    hash: str
    scopes: tuple[Scope, ...]
    types: tuple[str, ...] = ()
    name: str = ""
    created_at: int = 0  # ms

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        """A record from JSON (settings or Redis); raises `KeyError_` saying what is wrong."""
        try:
            key_id, digest = str(data["id"]), str(data["hash"])
        except KeyError as exc:
            raise KeyError_(f"a key record needs {exc.args[0]!r}") from None
        if not KEY_ID.match(key_id):
            raise KeyError_(f"key id {key_id!r} is not 12 hex digits")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise KeyError_(f"key {key_id}: 'hash' must be the secret's SHA-256, 64 hex digits")
        return cls(
            id=key_id,
            hash=digest,
            scopes=parse_scopes(data.get("scopes") or []),
            types=parse_patterns(data.get("types")),
            name=str(data.get("name") or ""),
            created_at=int(data.get("created_at") or 0),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hash": self.hash,
            "scopes": list(self.scopes),
            "types": list(self.types),
            "name": self.name,
            "created_at": self.created_at,
        }

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.hash, hash_secret(secret))


def new_key(scopes: tuple[Scope, ...], types: tuple[str, ...] = (), name: str = "") -> tuple[str, KeyRecord]:
    """A new key and the record to store; the key is not kept anywhere."""
    if name and not NAME.match(name):
        raise KeyError_("a key's name is 1 to 64 of letters, digits, spaces and '_.:@-'")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    record = KeyRecord(key_id, hash_secret(secret), scopes, types, name, int(time.time() * 1000))
    return f"js_{key_id}_{secret}", record


@dataclass(eq=False)
class Principal:
    """Who a request comes from: a key's id, name, scopes and type patterns."""

    key_id: str
    name: str
    scopes: frozenset[str]
    types: tuple[str, ...]  # empty: every type
    _seen: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, record: KeyRecord) -> Principal:
        return cls(record.id, record.name, frozenset(record.scopes), record.types)

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes or (scope == "read" and "admin" in self.scopes)

    @property
    def limited(self) -> bool:
        return bool(self.types)

    def allows(self, job_type: str) -> bool:
        """Whether this key may submit or see jobs of `job_type` (cached per type)."""
        if not self.types:
            return True
        seen = self._seen.get(job_type)
        if seen is None:
            if len(self._seen) > 10_000:  # types are few; a bound against a flood of names
                self._seen.clear()
            seen = self._seen[job_type] = any(fnmatchcase(job_type, p) for p in self.types)
        return seen

    def describe(self) -> str:
        """`key <id> (<name>)`, for messages and logs."""
        return f"key {self.key_id}" + (f" ({self.name})" if self.name else "")

    def types_text(self) -> str:
        return ", ".join(self.types)
