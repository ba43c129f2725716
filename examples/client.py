"""Enqueue jobs from Python and wait for their results, against `make run`.

    make run                                   # in another terminal
    .venv/bin/python examples/client.py        # or with --api and --gateway elsewhere

It submits an `example.echo` job and awaits its result, runs an `example.progress` job
while following its events, shows what a failed job raises, and enqueues a batch whose
results it awaits together (one WebSocket for all of them).
"""

from __future__ import annotations

import argparse
import asyncio

from jobstream import Client
from jobstream.client import JobFailed


async def main(api: str, gateway: str) -> None:
    async with Client(api, gateway) as client:
        # five lines: submit, and await the result
        job = await client.submit("example.echo", {"hello": "world"}, priority="high")
        print("echo:", job.id, await job.result(timeout=30))

        # one line: follow a job's events as they happen
        steps = await client.submit("example.progress", {"steps": 3, "ms": 100})
        async for event in steps.events():
            print("progress job:", event.state.value, event.progress.percent if event.progress else "")

        failing = await client.submit("example.fail", {"message": "on purpose"}, max_attempts=1)
        try:
            await failing.result(timeout=30)
        except JobFailed as exc:
            print("failed:", exc.error_type, exc.message, f"(attempt {exc.attempt}, {exc.reason})")

        batch = await client.submit_many([{"type": "example.echo", "payload": {"i": i}} for i in range(100)])
        results = await asyncio.gather(*(j.result(timeout=60) for j in batch if not isinstance(j, Exception)))
        print("batch:", len(results), "results, the last", results[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--gateway", default="ws://127.0.0.1:8001/ws")
    args = parser.parse_args()
    asyncio.run(main(args.api, args.gateway))
