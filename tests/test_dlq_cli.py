"""`jobstream dlq list | show | replay` against an API process on the real broker and Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest

from jobstream.cli import procs
from jobstream.settings import Settings
from schemas import DeadReason, Priority
from tests.conftest import MS
from tests.test_dlq import letter, topic_size, write_dead

pytestmark = pytest.mark.slow

WAIT_S = 60_000 * MS


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobstream.cli", "dlq", *args],
        env=env, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip


async def test_list_show_and_replay_from_the_terminal(
    api_url: str, env: dict[str, str], settings: Settings
) -> None:
    """list prints a table, show the tracebacks indented, replay counts (dry) and then replays."""
    now = int(time.time() * 1000)
    a = letter(settings, "email.send", DeadReason.exhausted, now - 2000)
    b = letter(settings, "email.send", DeadReason.timeout, now - 1000)
    await write_dead(settings, [a, b])

    def indexed() -> bool:
        return len(httpx.get(f"{api_url}/dlq").json()["items"]) == 2

    await asyncio.to_thread(procs.wait_until, indexed, timeout_s=WAIT_S, what="the records indexed")

    out = await asyncio.to_thread(cli, env, "list", "--api", api_url, "--reason", "timeout")
    assert out.returncode == 0, out.stderr
    assert "REASON" in out.stdout and b.id in out.stdout and a.id not in out.stdout

    out = await asyncio.to_thread(cli, env, "show", a.id, "--api", api_url)
    assert out.returncode == 0, out.stderr
    assert "attempt 1" in out.stdout and "email.send broke" in out.stdout and "\n    Traceback:" in out.stdout

    out = await asyncio.to_thread(cli, env, "replay", "--type", "email.send", "--api", api_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 dead letter(s) match (dry run")
    assert await topic_size(settings, settings.topics.jobs(Priority.normal)) == 0

    out = await asyncio.to_thread(cli, env, "replay", "--type", "email.send", "--execute", "--api", api_url)
    assert out.returncode == 0, out.stderr
    assert "done: replayed 2, skipped 0" in out.stdout
    assert await topic_size(settings, settings.topics.jobs(Priority.normal)) == 2

    out = await asyncio.to_thread(cli, env, "show", "no-such-id", "--api", api_url)
    assert out.returncode == 1 and "404" in out.stderr
    out = await asyncio.to_thread(cli, env, "list", "--reason", "bogus", "--api", api_url)
    assert out.returncode == 1 and "reason" in out.stderr


def test_api_down_is_a_clear_error(env: dict[str, str]) -> None:
    """With nothing listening, the CLI says it cannot reach the API and exits 2."""
    out = cli(env, "list", "--api", f"http://127.0.0.1:{procs.free_port()}")
    assert out.returncode == 2 and "cannot reach the API" in out.stderr
