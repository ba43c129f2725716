"""A worker app for the dashboard's browser tests.

`dash.echo` returns its payload; `dash.fail` always raises (a traceback to show);
`dash.until_fixed` raises until the file named by `$JOBSTREAM_TEST_FIXED` exists, so a
dead letter of it completes once replayed after the "fix".
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from consumer.app import JobContext, WorkerApp

app = WorkerApp("dashboard-test")


@app.handler("dash.echo")
async def echo(ctx: JobContext) -> dict[str, Any]:
    return ctx.payload


@app.handler("dash.fail")
async def fail(ctx: JobContext) -> None:
    raise RuntimeError("broken on purpose")


@app.handler("dash.until_fixed")
async def until_fixed(ctx: JobContext) -> dict[str, Any]:
    if not await asyncio.to_thread(Path(os.environ["JOBSTREAM_TEST_FIXED"]).exists):
        raise RuntimeError("not fixed yet")
    return {"fixed": True}
