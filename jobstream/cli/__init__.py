"""The `jobstream` command: dev, api, gateway, worker, scheduler, topics, submit, dlq, queues,
schedules, keys.

This package holds the tools that drive the services, and only they import every service:
the parser and the service commands here; `dev` (`make run`: a local Kafka and Redis from
`stack`, the services under `supervisor`, child processes through `procs`); `dlq`,
`queues` and `schedules`, which talk to a running API through `http` (with `JOBSTREAM_API_KEY` when it
requires keys); `keys`, which manages API keys in Redis. The shared runtime (`jobstream.*`
outside this package) imports nothing from here nor from the services.

The benchmarks are not a subcommand: they live in `bench/`, outside the installed package,
and run from a source checkout with `make bench` (`python -m bench`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from jobstream.settings import (
    ApiSettings,
    GatewaySettings,
    SchedulerSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
    settings_problems,
)

S = TypeVar("S", bound=Settings)

WAIT_SAY_S = 5.0  # how often a service waiting for Kafka at start says so
WAIT_RETRY_S = 1.0


def load_settings(kind: type[S], command: str, **overrides: Any) -> S:
    """The command's settings; on bad ones, a line per problem naming the variable, exit 2."""
    try:
        return kind(**overrides)
    except ValidationError as exc:
        for line in settings_problems(exc):
            print(f"jobstream {command}: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def check_kafka_access(settings: Settings, command: str, *, wait_s: float | None = None) -> None:
    """Exit 2 with one line naming the setting when Kafka refuses these settings' login, TLS
    or protocol (`jobstream.kafka_security.check_access`): the services' retries while Kafka
    is missing would otherwise retry that forever. While no broker answers, wait up to
    `wait_s` (default `settings.kafka_wait_s`), saying so every few seconds, then exit 1 with
    one line naming `JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS`. Ctrl-C while waiting exits 130."""
    from jobstream.kafka_security import KafkaAccessError, check_access

    where = settings.kafka_bootstrap_servers
    deadline = time.monotonic() + (settings.kafka_wait_s if wait_s is None else wait_s)
    say_at = time.monotonic() + WAIT_SAY_S
    try:
        publishes = command in ("api", "worker", "scheduler")  # each picks status partitions
        while not asyncio.run(check_access(settings, publishes_status=publishes)):
            now = time.monotonic()
            if now >= deadline:
                print(
                    f"jobstream {command}: no Kafka broker answers at {where}: "
                    "check JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS",
                    file=sys.stderr,
                )
                raise SystemExit(1)
            if now >= say_at:
                print(f"jobstream {command}: waiting for Kafka at {where} ({deadline - now:.0f} s left)",
                      file=sys.stderr)  # fmt: skip
                say_at = now + WAIT_SAY_S
            time.sleep(min(WAIT_RETRY_S, max(deadline - now, 0.0)))
    except KafkaAccessError as exc:
        print(f"jobstream {command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def load_object(spec: str) -> object:
    """Import `module:attribute`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"expected module:attribute, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"module {module_name!r} has no attribute {attr!r}") from None


def _serve(app: object, settings: ServerSettings, **overrides: Any) -> None:
    import uvicorn

    from jobstream.serving import server_options

    uvicorn.run(app, **server_options(settings, **overrides))  # type: ignore[arg-type]


def cmd_api(args: argparse.Namespace) -> None:
    from producer import create_app

    settings = load_settings(ApiSettings, "api", **_overrides(args, "host", "port"))
    setup_logging(settings.log_level)
    check_kafka_access(settings, "api")
    _serve(create_app(settings), settings)


def cmd_gateway(args: argparse.Namespace) -> None:
    from gateway import MAX_MESSAGE_BYTES, create_app

    settings = load_settings(GatewaySettings, "gateway", **_overrides(args, "host", "port"))
    setup_logging(settings.log_level)
    check_kafka_access(settings, "gateway")
    _serve(create_app(settings), settings, ws_max_size=MAX_MESSAGE_BYTES)


def cmd_worker(args: argparse.Namespace) -> None:
    from consumer import WorkerApp, run_worker

    settings = load_settings(WorkerSettings, "worker", **_overrides(args, "concurrency", "metrics_port"))
    setup_logging(settings.log_level)
    app = load_object(args.app)
    if not isinstance(app, WorkerApp):
        raise SystemExit(f"{args.app} is a {type(app).__name__}, not a consumer.WorkerApp")
    check_kafka_access(settings, "worker")
    raise SystemExit(run_worker(app, settings))


def cmd_scheduler(args: argparse.Namespace) -> None:
    from scheduler import run_scheduler

    settings = load_settings(SchedulerSettings, "scheduler")
    setup_logging(settings.log_level)
    check_kafka_access(settings, "scheduler")
    raise SystemExit(run_scheduler(settings))


def cmd_topics(args: argparse.Namespace) -> None:
    from aiokafka.errors import KafkaError

    from jobstream.kafka import TopicsError, ensure_topics, grow_partitions

    if args.partitions is not None and args.partitions < 1:
        print("jobstream topics: --partitions must be 1 or more", file=sys.stderr)
        raise SystemExit(2)
    settings = load_settings(Settings, "topics")
    setup_logging(settings.log_level)
    check_kafka_access(settings, "topics", wait_s=0)
    try:
        created = asyncio.run(ensure_topics(settings))
        grown = asyncio.run(grow_partitions(settings, args.partitions)) if args.partitions else []
    except (TopicsError, KafkaError) as exc:
        print(f"jobstream topics: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")
    if args.partitions:
        print(f"{args.partitions} partitions now: {', '.join(grown) or '(all had them)'}")


def cmd_dev(args: argparse.Namespace) -> None:
    from jobstream.cli.dev import run_dev

    raise SystemExit(
        run_dev(workers=args.workers, concurrency=args.concurrency, app=args.app, brokers=args.brokers)
    )


def cmd_submit(args: argparse.Namespace) -> None:
    from jobstream.cli.http import submit_cli

    raise SystemExit(submit_cli(args))


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole pipeline on a local Kafka and Redis")
    dev.add_argument("--workers", type=int, default=2)
    dev.add_argument("--concurrency", type=int, default=32)
    dev.add_argument("--app", default="consumer.examples:app")
    dev.add_argument(
        "--brokers", type=int, default=1,
        help="Kafka nodes (KRaft, each broker and controller); 3 gives a replicated cluster",
    )  # fmt: skip
    dev.set_defaults(func=cmd_dev)

    api = sub.add_parser("api", help="run the HTTP API (producer)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)

    gw = sub.add_parser("gateway", help="run the WebSocket gateway and the projector")
    gw.add_argument("--host")
    gw.add_argument("--port", type=int)
    gw.set_defaults(func=cmd_gateway)

    wk = sub.add_parser("worker", help="run a worker: jobstream worker module:app")
    wk.add_argument("app", help="module:attribute of a consumer.WorkerApp")
    wk.add_argument("--concurrency", type=int)
    wk.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics on this port (0: any free port)"
    )
    wk.set_defaults(func=cmd_worker)

    sc = sub.add_parser("scheduler", help="run a delay scheduler on its own (the API runs one too)")
    sc.set_defaults(func=cmd_scheduler)

    tp = sub.add_parser("topics", help="create the topics")
    tp.add_argument(
        "--partitions", type=int, help="grow the job, retry and dead-letter topics to this many partitions"
    )
    tp.set_defaults(func=cmd_topics)

    sm = sub.add_parser("submit", help="submit a job over HTTP")
    sm.add_argument("type")
    sm.add_argument("payload", nargs="?", default="{}", help="JSON object")
    sm.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    sm.add_argument("--api", default="http://127.0.0.1:8000")
    sm.add_argument("--wait", action="store_true", help="follow the job until it ends")
    sm.add_argument("--gateway", default="ws://127.0.0.1:8001/ws", help="WebSocket used by --wait")
    sm.add_argument("--timeout", type=float, help="seconds --wait waits before giving up")
    sm.set_defaults(func=cmd_submit)

    from jobstream.cli.dlq import add_parser as add_dlq_parser
    from jobstream.cli.keys import add_parser as add_keys_parser
    from jobstream.cli.queues import add_parser as add_queues_parser
    from jobstream.cli.schedules import add_parser as add_schedules_parser

    add_dlq_parser(sub)
    add_queues_parser(sub)
    add_schedules_parser(sub)
    add_keys_parser(sub)
    return p


def tune_gc() -> None:
    """Fewer, cheaper collections for long-lived services: what is alive after start-up is
    frozen out of every collection; the young generation collects every 50,000
    allocations (Python's default: 700), the middle one every 200 young collections
    (default 10). A worker keeps thousands of fetched jobs alive, so most young objects
    survive into the middle generation, and each pass over it took 0.3 s: at 20 a quarter
    of a busy worker's CPU went to collections, two thirds of it to the middle generation
    (`make bench` scenario 3, one worker: 9,400 jobs/s at 20, 12,300 at 200)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 200, 100)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command in ("api", "gateway", "worker", "scheduler"):
        tune_gc()
    args.func(args)
