"""`jobstream queues`: how much work waits where (`GET /queues`), as a table.

`--watch S` prints it again every S seconds until Ctrl-C. Exit codes: 0 done; 1 the API
answered with an error (503 names Kafka or Redis); 2 the API unreachable.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from jobstream.cli.http import Unreachable, _detail, request


def add_parser(sub: Any) -> None:
    p = sub.add_parser("queues", help="queue depths: priority topics, retry tiers, delayed, dead letters")
    p.add_argument("--api", default="http://127.0.0.1:8000")
    p.add_argument("--watch", type=float, metavar="S", help="print again every S seconds until Ctrl-C")
    p.set_defaults(func=lambda args: sys.exit(run_queues(args)))


def run_queues(args: argparse.Namespace) -> int:
    api = str(args.api).rstrip("/")
    try:
        while True:
            status, body = request("GET", f"{api}/queues")
            if status != 200:
                print(f"error: {_detail(status, body)}", file=sys.stderr)
                return 1
            print(render(body), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
            print()
    except Unreachable as exc:
        print(f"error: {exc}\n  is the API running?", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0 if args.watch else 130


def render(body: dict[str, Any]) -> str:
    """The table `jobstream queues` prints for one `GET /queues` answer."""
    rows = [("queue", "kind", "depth", "end offset", "topic")]
    rows += [
        (q["name"], q["kind"], f"{q['depth']:,}", f"{q['end_offset']:,}", q["topic"]) for q in body["queues"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(
            cell.rjust(w) if i in (2, 3) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    delayed, dead = body["delayed"], body["dead_letters"]
    lines.append(f"delayed: {delayed['waiting']:,} waiting, {delayed['claimed']:,} claimed by a scheduler")
    lines.append(f"dead letters: {dead['indexed']:,} indexed (GET /dlq), {dead['on_topic']:,} on the topic")
    lines.append(f"depth: records the group {body['group']} has not committed past")
    return "\n".join(lines)
