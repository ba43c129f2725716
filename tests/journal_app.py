"""A worker app for process tests whose handler journals each run to a file of its process.

`journal.sleep {"ms"}` appends `start <id>` to `$JOBSTREAM_TEST_JOURNAL/<pid>` (give each
worker a folder of its own), sleeps, then appends `end <id>`. Each line is one unbuffered
`write`, so it survives a kill -9: the journals are the ground truth of which worker
started and finished which job, even where a killed worker's status events never reached
Kafka.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.app import JobContext, WorkerApp

app = WorkerApp("journal")
_fd: int | None = None


def _journal(line: str) -> None:
    global _fd
    if _fd is None:
        path = Path(os.environ["JOBSTREAM_TEST_JOURNAL"]) / str(os.getpid())
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{line}\n".encode())


@app.handler("journal.sleep")
async def sleep(ctx: JobContext) -> dict[str, Any]:
    """Journal the start, sleep `ms` milliseconds (default 20), journal the end."""
    _journal(f"start {ctx.job.id}")
    ms = float(ctx.payload.get("ms", 20))
    await asyncio.sleep(ms / 1000)
    _journal(f"end {ctx.job.id}")
    return {"slept_ms": ms}


@dataclass(frozen=True)
class Journal:
    """One worker's journals: the jobs it started (how often) and those it finished."""

    started: Counter[str]
    ended: set[str]

    @classmethod
    def read(cls, folder: Path) -> Journal:
        started: Counter[str] = Counter()
        ended: set[str] = set()
        lines = [line for path in folder.iterdir() for line in path.read_text().splitlines()]
        for line in lines:
            what, _, job_id = line.partition(" ")
            if what == "start":
                started[job_id] += 1
            elif what == "end":
                ended.add(job_id)
        return cls(started, ended)
