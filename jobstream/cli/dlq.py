"""`jobstream dlq list | show | replay`: browse and replay dead letters over the HTTP API.

Its HTTP goes through the Python client (`jobstream.cli.http.request`). `replay` is a dry
run unless given `--execute`: it prints how many records match and a sample; with
`--execute` it starts the replay and follows `GET /dlq/replays/{id}` with a progress bar
until it ends.
Exit codes: 0 done; 1 the API refused or the replay failed; 2 the API unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from datetime import datetime
from typing import Any

from jobstream.cli.http import _detail, call_api, request

POLL_S = 0.25
BAR = 30


def add_parser(sub: Any) -> None:
    """Register `dlq` and its subcommands on the `jobstream` parser."""
    dlq = sub.add_parser("dlq", help="browse and replay dead letters")
    dlq.set_defaults(func=lambda args: sys.exit(run_dlq(args)))
    dsub = dlq.add_subparsers(dest="dlq_command", required=True)

    ls = dsub.add_parser("list", help="list dead letters, newest first")
    _filters(ls)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--cursor", help="next_cursor of the previous page")
    ls.set_defaults(dlq_func=cmd_list)

    show = dsub.add_parser("show", help="one dead letter with every attempt's error")
    show.add_argument("id")
    show.add_argument("--api", default="http://127.0.0.1:8000")
    show.set_defaults(dlq_func=cmd_show)

    rp = dsub.add_parser("replay", help="re-enqueue dead letters (a dry run without --execute)")
    _filters(rp)
    rp.add_argument("--ids", nargs="+", default=[], metavar="ID")
    rp.add_argument("--execute", action="store_true", help="replay for real")
    rp.add_argument("--force", action="store_true", help="replay records already replayed too")
    rp.add_argument("--priority", choices=["high", "normal", "low"])
    rp.add_argument("--rate", type=float, help="jobs per second")
    rp.set_defaults(dlq_func=cmd_replay)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", action="append", default=[], dest="types", metavar="TYPE")
    p.add_argument("--reason", action="append", default=[], dest="reasons", metavar="REASON")
    p.add_argument("--since", help="ms since the epoch or RFC 3339")
    p.add_argument("--until", help="ms since the epoch or RFC 3339")
    p.add_argument("--q", help="text in an attempt's error type or message")
    p.add_argument("--api", default="http://127.0.0.1:8000")


def run_dlq(args: argparse.Namespace) -> int:
    return call_api(args.dlq_func, args)


def cmd_list(args: argparse.Namespace, api: str) -> int:
    query: dict[str, Any] = {"type": args.types, "reason": args.reasons, "limit": args.limit}
    for name in ("since", "until", "q", "cursor"):
        if getattr(args, name):
            query[name] = getattr(args, name)
    status, body = request("GET", f"{api}/dlq?{urllib.parse.urlencode(query, doseq=True)}")
    if status != 200:
        return _fail(status, body)
    _table(body["items"])
    if body.get("next_cursor"):
        print(f"\nmore: --cursor {body['next_cursor']}")
    return 0


def cmd_show(args: argparse.Namespace, api: str) -> int:
    status, d = request("GET", f"{api}/dlq/{urllib.parse.quote(args.id, safe='')}")
    if status != 200:
        return _fail(status, d)
    print(f"id          {d['id']}")
    print(f"type        {d.get('type') or '-'}")
    print(f"reason      {d['reason']}")
    print(f"dead at     {_time(d['dead_at'])}")
    src = d.get("source") or {}
    print(f"source      {src.get('topic')} partition {src.get('partition')} offset {src.get('offset')}")
    if d.get("replayed_by"):
        print(f"replayed    by {d['replayed_by']} as {d.get('replayed_as') or '?'}")
    if d.get("job"):
        job = d["job"]
        print(f"job         priority {job.get('priority')} key {job.get('key') or '-'}")
        print(f"payload     {_json(job.get('payload'))[:2000]}")
    if d.get("raw"):
        print(f"raw         {d['raw'][:2000]} (base64)")
    for e in d.get("errors") or []:
        where = f" on {e['worker']}" if e.get("worker") else ""
        print(f"\nattempt {e['attempt']} at {_time(e['at'])}{where}: {e['type']}: {e['message']}")
        for line in (e.get("traceback") or "").rstrip().splitlines():
            print(f"    {line}")
    return 0


def cmd_replay(args: argparse.Namespace, api: str) -> int:
    body: dict[str, Any] = {"types": args.types, "reasons": args.reasons, "ids": args.ids}
    for name in ("since", "until", "q", "priority", "rate"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    body["dry_run"] = not args.execute
    body["force"] = args.force
    status, answer = request("POST", f"{api}/dlq/replay", body)
    if not args.execute:
        if status != 200:
            return _fail(status, answer)
        print(f"{answer['matched']} dead letter(s) match (dry run; add --execute to replay them)")
        if answer["sample"]:
            print()
            _table(answer["sample"])
        return 0
    if status != 202:
        return _fail(status, answer)
    replay_id, matched = answer["replay_id"], answer["matched"]
    print(f"replay {replay_id}: {matched} dead letter(s) matched", flush=True)
    return _follow(api, replay_id)


def _follow(api: str, replay_id: str) -> int:
    tty = sys.stderr.isatty()
    while True:
        status, r = request("GET", f"{api}/dlq/replays/{replay_id}")
        if status != 200:
            return _fail(status, r)
        if tty:
            print(f"\r{_bar(r)}", end="", file=sys.stderr, flush=True)
        if r["state"] != "running":
            break
        time.sleep(POLL_S)
    if tty:
        print(file=sys.stderr)
    why = r["skipped_by_reason"]
    print(
        f"{r['state']}: replayed {r['replayed']}, skipped {r['skipped']} "
        f"(already replayed {why['already_replayed']}, no job {why['no_job']}, expired {why['expired']}), "
        f"failed {r['failed']}"
    )
    if r.get("error"):
        print(f"error: {r['error']}", file=sys.stderr)
    return 0 if r["state"] == "done" and not r["failed"] else 1


def _bar(r: dict[str, Any]) -> str:
    done = r["replayed"] + r["skipped"] + r["failed"]
    total = max(r["matched"], 1)
    filled = min(BAR, round(BAR * done / total))
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {done}/{r['matched']}"


def _table(items: list[dict[str, Any]]) -> None:
    if not items:
        print("(no dead letters)")
        return
    rows = [("DEAD AT", "ID", "TYPE", "REASON", "ATT", "LAST ERROR", "REPLAYED")]
    for it in items:
        err = it.get("last_error") or {}
        text = f"{err.get('type', '')}: {err.get('message', '')}" if err else "-"
        rows.append(
            (_time(it["dead_at"]), it["id"], it.get("type") or "-", it["reason"], str(it["attempts"]),
             _clip(text, 60), "yes" if it.get("replayed_by") else "")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _fail(status: int, body: Any) -> int:
    print(f"error: {_detail(status, body)}", file=sys.stderr)
    return 1


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
