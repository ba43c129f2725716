"""`python -m bench` (or `make bench`): run the benchmarks and write `docs/BENCHMARKS.md`.

Starts its own Kafka and Redis (`jobstream.cli.stack`) in `.data/bench/` on free ports, runs
each scenario against a fresh topic prefix with the API, gateway and workers as child
processes, prints a table and writes it with the machine and the command to `--out`.
Flags as the former `jobstream bench`: `--quick` for smaller runs, `--only 1,3` for some
scenarios (then `--out` is left as it was), `--out PATH` for another report file.
Ctrl-C or SIGTERM stops every child (and each child dies with us anyway: `procs.spawn`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench import batch, client, delay, e2e, latency, rebalance, retry, scaling, schedules, single
from bench.harness import Bench, Plan, Step
from bench.load import say
from bench.report import render
from jobstream.cli import procs, tune_gc
from jobstream.cli.stack import LocalStack, StackError

# In this order; `--only` selects by number (both end-to-end runs are 3).
STEPS: list[Step] = [
    ("1", single.run),
    ("2", batch.run),
    ("3", lambda bench: e2e.run(bench, 1)),
    ("3", lambda bench: e2e.run(bench, 2)),
    ("4", latency.run),
    ("5", retry.run),
    ("6", delay.run),
    ("7", scaling.run),
    ("8", rebalance.run),
    ("9", schedules.run),
    ("10", client.run),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description="measure throughput and latency on the local stack"
    )
    p.add_argument("--quick", action="store_true", help="smaller runs")
    p.add_argument("--out", default="docs/BENCHMARKS.md")
    p.add_argument("--only", help="comma-separated scenario numbers (1-10); does not write --out")
    return p


def _tick(what: str, done: threading.Event) -> None:
    start = time.monotonic()
    while not done.wait(1.0):
        say(f"{what} ({time.monotonic() - start:.0f}s)")


def run(args: argparse.Namespace) -> int:
    """Start Kafka and Redis, run the scenarios, stop everything, print and write the report.

    Returns 0, 1 if a scenario failed or the stack did not start, 130 when interrupted
    (then nothing is written). Every child and the stack are stopped before it returns."""
    plan = Plan.quick() if args.quick else Plan()
    data = Path(".data").resolve()
    shutil.rmtree(data / "bench", ignore_errors=True)
    stack = LocalStack(
        data / "bench",
        kafka_port=procs.free_port(),
        controller_port=procs.free_port(),
        redis_port=procs.free_port(),
        jar_cache=data,
    )
    bench = Bench(plan, stack, data / "bench" / "logs")
    bench.logs.mkdir(parents=True, exist_ok=True)
    python = os.path.relpath(sys.executable)
    command = shlex.join(
        [sys.executable if python.startswith("..") else python, "-m", "bench", *sys.argv[1:]]
    )

    def to_sigint(signum: int, frame: FrameType | None) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # one path for both: asyncio cancels the run cleanly

    # A shell starts background jobs with SIGINT ignored, and then asyncio would not
    # install its handler: restore Python's, so SIGINT and SIGTERM always stop the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, to_sigint)
    logging.basicConfig(level=logging.WARNING, format="[bench] %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries on brand-new topics are routine
    code, starting = 130, threading.Event()
    try:
        threading.Thread(target=_tick, args=("starting Kafka and Redis", starting), daemon=True).start()
        try:
            stack.start()
        finally:
            starting.set()
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:  # pragma: no cover
            runner = asyncio.Runner()
        with runner:
            code = runner.run(bench.run_all(STEPS, set(args.only.split(",")) if args.only else None))
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
    except StackError as exc:
        say(f"could not start Kafka and Redis: {exc}")
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda n, f: say("still stopping, please wait"))
        bench.stop_children()
        stack.stop()
        say("stopped Kafka, Redis and every child process")
    if code == 130:
        return code
    doc = render(bench, command, args.quick)
    print("\n" + doc)
    for path, text in bench.files.items():  # drawings: beside the logs always, in docs/ with the report
        (data / "bench" / Path(path).name).write_text(text)
    if args.only:
        say(f"--only {args.only}: {args.out} left as it was; drawings in .data/bench/")
        return code
    for path, text in bench.files.items():
        Path(path).write_text(text)
        say(f"wrote {path}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(doc)
    say(f"wrote {args.out}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_gc()  # the measuring side collects as rarely as the services it measures
    return run(args)


__all__ = ["STEPS", "build_parser", "main", "run"]


if __name__ == "__main__":
    raise SystemExit(main())
