"""`jobstream schedules list | show | set | pause | resume | run | delete`: recurring
schedules over the HTTP API.

Its HTTP goes through the Python client (`jobstream.cli.http.request`). `set` makes or
replaces a schedule from flags (`--cron` with `--tz`, or `--every` seconds; the job's
`--type`, `--payload`, `--priority`; `--catch-up`, `--limit`); `show` prints its spec, next
run times and last runs with their jobs' states. Exit codes: 0 done; 1 the API refused (it
says which field); 2 the API unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from jobstream.cli.dlq import _fail, _time
from jobstream.cli.http import call_api, request


def add_parser(sub: Any) -> None:
    """Register `schedules` and its subcommands on the `jobstream` parser."""
    sch = sub.add_parser("schedules", help="recurring schedules: list, show, set, pause, resume, run, delete")
    sch.set_defaults(func=lambda args: sys.exit(run_schedules(args)))
    ssub = sch.add_subparsers(dest="schedules_command", required=True)
    ls = ssub.add_parser("list", help="every schedule with its next run")
    ls.set_defaults(schedules_func=cmd_list)
    for name, helptext in (
        ("show", "a schedule: its spec, next runs and last runs"),
        ("pause", "stop firing until resumed"),
        ("resume", "fire again from the next occurrence"),
        ("run", "fire one occurrence now"),
        ("delete", "delete a schedule"),
    ):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("name")
        p.set_defaults(schedules_func=cmd_show if name == "show" else _action(name))
    st = ssub.add_parser("set", help="make or replace a schedule")
    st.add_argument("name")
    when = st.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="cron expression, e.g. '*/5 * * * *'")
    when.add_argument("--every", type=float, metavar="S", help="an interval in seconds (at least 1)")
    st.add_argument("--tz", help="time zone of --cron (IANA, e.g. Europe/Berlin; default UTC)")
    st.add_argument("--type", required=True, dest="job_type", help="the job type each occurrence runs")
    st.add_argument("--payload", default="{}", help="JSON object")
    st.add_argument("--priority", choices=["high", "normal", "low"])
    st.add_argument("--catch-up", choices=["none", "last", "all"], dest="catch_up")
    st.add_argument("--limit", type=int, help="fire this many occurrences, then end")
    st.set_defaults(schedules_func=cmd_set)
    for p in (ls, st, *[ssub.choices[n] for n in ("show", "pause", "resume", "run", "delete")]):
        p.add_argument("--api", default="http://127.0.0.1:8000")


def run_schedules(args: argparse.Namespace) -> int:
    return call_api(args.schedules_func, args)


def _path(api: str, name: str, suffix: str = "") -> str:
    return f"{api}/schedules/{urllib.parse.quote(name, safe='')}{suffix}"


def cmd_list(args: argparse.Namespace, api: str) -> int:
    items: list[dict[str, Any]] = []
    after = None
    while True:
        query = urllib.parse.urlencode({"limit": 1000, **({"after": after} if after else {})})
        status, body = request("GET", f"{api}/schedules?{query}")
        if status != 200:
            return _fail(status, body)
        items += body["items"]
        if not (after := body.get("next_cursor")):
            break
    if not items:
        print("(no schedules)")
        return 0
    rows = [("NAME", "STATE", "WHEN", "TYPE", "NEXT RUN", "FIRED", "MISSED", "LAST RUN")]
    rows += [
        (s["name"], s["state"], _when(s), s["type"], s["next_runs"][0] if s["next_runs"] else "-",
         str(s["fired"]), str(s["missed"]), _time(s["last_run_at"]) if s["last_run_at"] else "-")
        for s in items
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace, api: str) -> int:
    status, s = request("GET", _path(api, args.name))
    if status != 200:
        return _fail(status, s)
    _summary(s)
    print(f"spec        {json.dumps(s['spec'], ensure_ascii=False)}")
    print(f"\nlast runs ({len(s['runs'])}):" if s["runs"] else "\nno runs yet")
    for run in s["runs"]:
        manual = " (run now)" if run.get("manual") else ""
        print(f"  {_time(run['occurrence_at'])}  {run['job_id']}  {run['state'] or 'forgotten'}{manual}")
    return 0


def cmd_set(args: argparse.Namespace, api: str) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
        return 1
    body: dict[str, Any] = {"type": args.job_type, "payload": payload}
    if args.cron is not None:
        body["cron"] = args.cron
    else:
        body["every_ms"] = round(args.every * 1000)
    for name in ("tz", "priority", "catch_up", "limit"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    status, s = request("PUT", _path(api, args.name), body)
    if status not in (200, 201):
        return _fail(status, s)
    print("created" if status == 201 else "replaced")
    _summary(s)
    return 0


def _action(name: str) -> Any:
    method, suffix = ("DELETE", "") if name == "delete" else ("POST", f"/{name}")

    def act(args: argparse.Namespace, api: str) -> int:
        status, body = request(method, _path(api, args.name, suffix))
        if status >= 300:
            return _fail(status, body)
        if name == "run":
            print(f"fired {body['job_id']}")
        elif name == "delete":
            print(f"deleted {args.name}")
        else:
            _summary(body)
        return 0

    return act


def _summary(s: dict[str, Any]) -> None:
    print(f"name        {s['name']} ({s['state']})")
    print(f"when        {_when(s)}")
    print(f"job         {s['type']} priority {s['priority']}")
    limit = f" of {s['limit']}" if s.get("limit") else ""
    print(f"fired       {s['fired']}{limit}, missed {s['missed']} (catch_up {s['catch_up']})")
    print(f"next runs   {', '.join(s['next_runs']) or '-'}")


def _when(s: dict[str, Any]) -> str:
    return f"{s['cron']} ({s['tz']})" if s.get("cron") else f"every {s['every_ms'] / 1000:g} s"
