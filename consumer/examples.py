"""Example handlers, run by `make run`: `jobstream worker consumer.examples:app`."""

from __future__ import annotations

import asyncio
from typing import Any

from consumer.app import JobContext, WorkerApp

app = WorkerApp("examples")


@app.handler("example.echo")
async def echo(ctx: JobContext) -> dict[str, Any]:
    """Return the payload."""
    return ctx.payload


@app.handler("example.sleep")
async def sleep(ctx: JobContext) -> dict[str, Any]:
    """Sleep `ms` milliseconds (default 100)."""
    ms = float(ctx.payload.get("ms", 100))
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.handler("example.progress")
async def progress(ctx: JobContext) -> dict[str, Any]:
    """Take `steps` steps of `ms` milliseconds each, reporting progress after each."""
    steps = int(ctx.payload.get("steps", 5))
    ms = float(ctx.payload.get("ms", 100))
    for step in range(1, steps + 1):
        await asyncio.sleep(ms / 1000)
        await ctx.progress(100 * step / steps, f"step {step}/{steps}")
    return {"steps": steps}


@app.handler("example.fail")
async def fail(ctx: JobContext) -> None:
    """Always raise."""
    raise RuntimeError(ctx.payload.get("message", "example.fail always fails"))


@app.handler("example.flaky")
async def flaky(ctx: JobContext) -> dict[str, Any]:
    """Fail the first `fail_times` attempts (default 1), then succeed."""
    fail_times = int(ctx.payload.get("fail_times", 1))
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"flaky: attempt {ctx.attempt} of the first {fail_times} fails")
    return {"attempt": ctx.attempt}


@app.handler("example.noop")
async def noop(ctx: JobContext) -> None:
    """Do nothing (for benchmarks)."""
    return None
