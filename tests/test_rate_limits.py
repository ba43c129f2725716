"""Rate limits per job type, shared by workers through a token bucket in Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer.ratelimit import Limit, TokenBuckets, parse_limits
from jobstream.cli import procs
from jobstream.settings import Settings
from tests.helpers import StatusLog, make_job, produce_jobs


def test_parse_limits() -> None:
    """Limits read as type=N/s|m|h; junk is refused with what to write."""
    limits = parse_limits("a.b=50/s, c=10/m,d=2/h")
    assert limits["a.b"].per_ms == 0.05 and limits["c"].per_ms == pytest.approx(10 / 60_000)
    assert Limit.parse("50/s").burst == 5 and Limit.parse("1/m").burst == 1
    for bad in ("a=0/s", "a=5", "=5/s", "a=5/d"):
        with pytest.raises(ValueError, match="rate limit"):
            parse_limits(bad)


async def test_token_bucket_refills_at_its_rate(redis: Redis, prefix: str) -> None:
    """The Lua bucket grants its burst, then tokens at the limit's rate, and says when the next is due."""
    now = 1_000_000  # the bucket's clock, in ms, moved by the test alone
    buckets = TokenBuckets(redis, "{" + prefix + "}", clock_ms=lambda: now)
    limit = Limit.parse("200/s")  # 0.2 tokens/ms, a burst of 20
    assert await buckets.take("t", limit, 1_000) == (20, 5)
    assert await buckets.take("t", limit, 1_000) == (0, 5)
    start, wait = now, 5
    answers: list[tuple[int, int]] = []
    while now + wait <= start + 1_000:
        now += wait  # sleep as long as the bucket said, as a worker does
        answers.append(await buckets.take("t", limit, 1_000))
        wait = answers[-1][1]
    assert answers == [(1, 5)] * 200  # 200/s, one token every 5 ms
    now += 60_000
    assert await buckets.take("t", limit, 1_000) == (20, 5)  # an idle bucket holds no more than its burst


@pytest.mark.slow
async def test_limit_holds_across_three_workers_and_other_types_flow(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """Three workers, 50/s on example.noop: over 20 s the rate is within 5 %; echo jobs are not held."""
    limited = [make_job("example.noop") for _ in range(1_500)]
    free = [make_job("example.echo", {"i": i}) for i in range(200)]
    wenv = {**env, "JOBSTREAM_RATE_LIMITS": "example.noop=50/s", "JOBSTREAM_SESSION_TIMEOUT_MS": "3000"}
    cmd = [sys.executable, "-m", "jobstream.cli", "worker", "consumer.examples:app"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with StatusLog(settings) as status:
            workers = [procs.spawn(cmd, env=wenv, log=tmp_path / f"w{i}.log") for i in range(3)]
            await produce_jobs(settings, limited + free)

            def noop_done() -> list[int]:
                return sorted(
                    e["at"] for j in limited for e in status.events.get(j.id, ()) if e["state"] == "completed"
                )

            def spans_21_s() -> bool:
                times = noop_done()
                return bool(times) and times[-1] - times[0] >= 21_000

            await status.wait_for(
                lambda: all("completed" in status.states(j.id) for j in free), 30, "echo jobs"
            )
            assert len(noop_done()) < 200, "the limited type did not wait"
            await status.wait_for(spans_21_s, 60, "21 s of limited jobs")
            times = noop_done()
            window = [t for t in times if times[0] + 500 <= t < times[0] + 20_500]  # skip the first burst
            assert 950 <= len(window) <= 1_050, f"{len(window)} jobs in 20 s"
            assert len({e["worker"] for j in limited for e in status.events.get(j.id, ())}) == 3
    finally:
        for w in workers:
            procs.stop(w)
