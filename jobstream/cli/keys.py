"""`jobstream keys create|list|revoke`: API keys kept in Redis (or printed for the settings).

`create` prints the new key once; only its SHA-256 is stored. `--print-setting` stores
nothing and prints the record to put in `JOBSTREAM_API_KEYS` instead (keys that must work
while Redis is down, or a setup without `jobstream keys` access to Redis). A revoked key
stops working within `JOBSTREAM_AUTH_CACHE_S` (10 s) on every process.
Exit codes: 0 done; 1 no such key; 2 bad arguments or Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobstream.access.keys import (
    KeyError_,
    KeyRecord,
    new_key,
    parse_patterns,
    parse_scopes,
)
from jobstream.access.ring import KeyRing
from jobstream.settings import ServerSettings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keys", help="API keys: create, list, revoke")
    cmds = p.add_subparsers(dest="keys_command", required=True)
    create = cmds.add_parser("create", help="make a key; it is printed once")
    create.add_argument("--scopes", required=True, help="comma-separated: submit, read, admin")
    create.add_argument("--types", default="", help="job-type patterns it is limited to, e.g. 'images.*'")
    create.add_argument("--name", default="", help="who or what it is for (shown in lists and errors)")
    create.add_argument(
        "--print-setting", action="store_true", help="store nothing: print the record for JOBSTREAM_API_KEYS"
    )
    cmds.add_parser("list", help="the keys in Redis and in JOBSTREAM_API_KEYS (never the keys themselves)")
    revoke = cmds.add_parser("revoke", help="remove a key from Redis")
    revoke.add_argument("key_id", help="the 12 hex digits after js_")
    p.set_defaults(func=lambda args: sys.exit(run_keys(args)))


def run_keys(args: argparse.Namespace) -> int:
    from jobstream.cli import load_settings

    settings = load_settings(ServerSettings, "keys")
    try:
        return asyncio.run(_run(args, settings))
    except KeyError_ as exc:
        print(f"jobstream keys: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"jobstream keys: Redis cannot answer at JOBSTREAM_REDIS_URL ({exc})", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, settings: ServerSettings) -> int:
    if args.keys_command == "create" and args.print_setting:
        key, record = _new(args)
        print(json.dumps(record.as_dict()))
        print(f"\nthe key (shown once; only its hash is kept): {key}", file=sys.stderr)
        print("add the record above to the JSON list in JOBSTREAM_API_KEYS", file=sys.stderr)
        return 0
    redis = Redis.from_url(settings.redis_url)
    try:
        ring = KeyRing.of(settings, redis)
        if args.keys_command == "create":
            key, record = _new(args)
            await ring.add(record)
            print(key)
            print(f"\nkey {record.id} stored in Redis; the key above is shown once", file=sys.stderr)
            return 0
        if args.keys_command == "list":
            rows = [(r, "settings") for r in ring.configured()] + [(r, "redis") for r in await ring.stored()]
            print(render(rows))
            return 0
        if await ring.revoke(args.key_id):
            print(f"key {args.key_id} revoked; it stops working within {settings.auth_cache_s:g} s")
            return 0
        if any(r.id == args.key_id for r in ring.configured()):
            print(f"key {args.key_id} is in JOBSTREAM_API_KEYS: remove it there and restart", file=sys.stderr)
        else:
            print(f"no key {args.key_id} in Redis", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


def _new(args: argparse.Namespace) -> tuple[str, KeyRecord]:
    return new_key(parse_scopes(args.scopes), parse_patterns(args.types), args.name)


def render(rows: list[tuple[KeyRecord, str]]) -> str:
    if not rows:
        return "no keys: make one with `jobstream keys create --scopes submit,read`"
    lines = [f"{'id':<12}  {'name':<20}  {'scopes':<18}  {'types':<20}  {'created':<20}  where"]
    for r, where in rows:
        created = (
            datetime.fromtimestamp(r.created_at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            if r.created_at
            else "-"
        )
        lines.append(
            f"{r.id:<12}  {r.name or '-':<20}  {','.join(r.scopes):<18}  "
            f"{','.join(r.types) or '(all)':<20}  {created:<20}  {where}"
        )
    return "\n".join(lines)
