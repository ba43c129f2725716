"""Scenario 1: single-job HTTP, `POST /jobs` one job a request, for `Plan.wrk_s` seconds;
then again (1k) against an API that requires API keys, to show what checking them costs.

wrk (2 threads x 64 connections) drives the API when it is installed or can be installed
with apt-get; otherwise `python -m bench.load single` (asyncio, 64 connections) does.
The figure is 2xx answers per second; the note adds how many jobs reached Kafka meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import orjson

from bench import load
from bench.harness import Bench
from bench.load import say
from jobstream.access.keys import KeyRecord, new_key
from jobstream.cli import procs


async def run(bench: Bench) -> None:
    """Scenario 1 in a run: an API open to all, and one requiring API keys (1k), each twice
    in the order open, keys, keys, open: a later pass runs on a warmer broker (its JIT is
    still compiling), so each row is the mean of an early and a late pass."""
    key = new_key(("submit",), name="bench")
    rates: dict[str, list[float]] = {"1": [], "1k": []}
    how = ""
    for n, passed in enumerate((None, key, key, None)):
        name, rate, how = await _pass(bench, passed, n)
        rates[name].append(rate)
    for name, title in (("1", "Single-job HTTP"), ("1k", "Single-job HTTP with API keys required,")):
        each = " and ".join(f"{r:,.0f}" for r in rates[name])
        bench.row(f"{name}. {title} `POST /jobs` ({how}; mean of {each})", sum(rates[name]) / 2, "single")


async def _pass(bench: Bench, key: tuple[str, KeyRecord] | None, n: int) -> tuple[str, float, str]:
    """An API of its own (requiring `key` when given), then the load for `Plan.wrk_s` s:
    the row's name, 2xx answers per second, and how the load was made."""
    s, secs = await bench.fresh(f"single{n}" if key is None else f"single{n}-keys"), bench.plan.wrk_s
    env = {} if key is None else {"JOBSTREAM_AUTH": "required", "JOBSTREAM_API_KEYS": f"[{_record(key[1])}]"}
    api = await bench.start_api(s, env=env)
    secret = None if key is None else key[0]
    wrk = ensure_wrk()
    await load.warm_up(api, "/jobs", load.NOOP_BODY, 1_000, 16, secret)
    async with load.KafkaProbe(s) as probe:
        before, stop = await probe.end_total(), asyncio.Event()
        ticker = asyncio.create_task(
            load.every_second("single-job HTTP, jobs in Kafka", probe.end_total, stop)
        )
        if wrk:
            script = bench.logs / "post.lua"
            auth = "" if secret is None else f'wrk.headers["Authorization"] = "Bearer {secret}"\n'
            script.write_text(load.WRK_LUA + auth)
            args = [
                wrk,
                "-t2",
                "-c64",
                f"-d{secs}s",
                "--timeout",
                "5s",
                "--latency",
                "-s",
                str(script),
                f"{api}/jobs",
            ]
            how = f"wrk 2 threads x 64 connections, {secs} s"
        else:
            args = [sys.executable, "-m", "bench.load", "single", api, "64", str(secs)]
            how = f"asyncio client (wrk missing), 64 connections, {secs} s"
        meter, since = bench.meter(), len(bench.children)
        proc = bench.spawn("load", args, s, env={} if secret is None else {"BENCH_API_KEY": secret})
        out_log = bench.children[-1][2]
        while proc.poll() is None:
            bench.check_alive()
            await asyncio.sleep(0.1)
        stop.set()
        await ticker
        in_kafka = await probe.end_total() - before
    out = procs.tail(out_log, 200)
    r = load.parse_wrk(out) if wrk else orjson.loads(out.splitlines()[-1])
    if "requests" not in r:
        raise RuntimeError(f"could not read the load generator's output:\n{out}")
    ok = r["requests"] - r["non2xx"]
    rate = ok / r["seconds"]
    name = "1" if key is None else "1k"
    lat = f", latency p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms" if "p99_ms" in r else ""
    bench.notes.append(
        f"{name}: after 1,000 warm-up requests, {r['requests']:,.0f} requests in {r['seconds']:.1f} s, "
        f"{r['non2xx']:,.0f} non-2xx, {r['socket_errors']:,.0f} socket errors{lat}; "
        f"{in_kafka:,} jobs reached Kafka"
    )
    bench.cpu_note(name, meter, since)
    bench.stop_children(name)
    return name, rate, how


def _record(record: KeyRecord) -> str:
    return orjson.dumps(record.as_dict()).decode()


def ensure_wrk() -> str | None:
    """The path of wrk, installed with apt-get when missing and root; None to fall back."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing wrk with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "install", "-y", "-q", "wrk"],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "wrk"],
        ):
            subprocess.run(cmd, env=env, check=False, capture_output=True)
            if found := shutil.which("wrk"):
                return found
    say("wrk is not available: using the asyncio client instead")
    return None


__all__ = ["ensure_wrk", "run"]
