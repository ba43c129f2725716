"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against an
API, a gateway and a worker, each its own process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from jobstream.access.keys import new_key
from jobstream.cli import procs
from jobstream.cli.stack import ensure_command
from jobstream.settings import Settings
from tests.pipeline import spawn_service

# Chromium's own connections (updates, sync, QUIC probes) are refused on a closed network,
# many at a time: off. As root it needs --no-sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000


@dataclass
class Deployment:
    api: str
    gateway: str
    fixed: Path  # `dash.until_fixed` succeeds once this file exists
    key: str | None = None
    restart_gateway: Callable[[], None] = lambda: None  # SIGTERM it, start it again on its port

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    async def submit(self, job_type: str, **spec: Any) -> str:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"type": job_type, **spec}
            resp = await client.post(f"{self.api}/jobs", json=body, headers=self.headers())
        assert resp.status_code == 202, resp.text
        job_id: str = resp.json()["id"]
        return job_id


@contextlib.contextmanager
def deployment(env: dict[str, str], logs: Path, auth: bool = False) -> Iterator[Deployment]:
    """API, gateway and one worker of `tests.dashboard_app`; the API allows the gateway's
    origin and the gateway's page knows the API's address, as `make run` sets them."""
    api_port, gw_port = procs.free_port(), procs.free_port()
    api, gateway = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gw_port}"
    fixed = logs / "fixed"
    env = {**env, "JOBSTREAM_CORS_ORIGINS": gateway, "JOBSTREAM_DASHBOARD_API_URL": api,
           "JOBSTREAM_TEST_FIXED": str(fixed), "JOBSTREAM_DEFAULT_MAX_ATTEMPTS": "1"}  # fmt: skip
    key = None
    if auth:
        key, record = new_key(("admin", "submit"), name="dashboard test")
        env |= {"JOBSTREAM_AUTH": "required", "JOBSTREAM_API_KEYS": json.dumps([record.as_dict()])}
    services = [
        spawn_service("api", env, logs / "api.log", api_port),
        spawn_service("gateway", env, logs / "gw.log", gw_port),
    ]

    def restart_gateway() -> None:
        procs.stop(services[1].proc, grace_s=30)
        services[1] = spawn_service("gateway", env, logs / "gw-2.log", gw_port)
        services[1].wait_ready()

    cmd = [sys.executable, "-m", "jobstream.cli", "worker", "tests.dashboard_app:app"]
    worker = procs.spawn(cmd, env=env, log=logs / "worker.log")
    try:
        for service in services:
            service.wait_ready()
        yield Deployment(api, gateway, fixed, key, restart_gateway)
    finally:
        for proc in (worker, *(s.proc for s in reversed(services))):
            procs.stop(proc, grace_s=30)


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_command("chromium", "chromium", "and run the browser tests again")


@contextlib.asynccontextmanager
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def opened(chromium: str, url: str) -> AsyncIterator[Page]:
    """A page at `url`; fails the test on any error the page's scripts raise."""
    async with browser(chromium) as b:
        page = await b.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        yield page
        assert not errors, errors


@pytest.fixture
def open_deployment(env: dict[str, str], settings: Settings, tmp_path: Path) -> Iterator[Deployment]:
    """An open deployment (no keys) on `settings`' topics."""
    with deployment(env, tmp_path) as d:
        yield d


async def test_jobs_turn_completed_live_and_a_failure_shows_its_traceback(
    chromium: str, open_deployment: Deployment
) -> None:
    d = open_deployment
    async with opened(chromium, f"{d.gateway}/#/jobs") as page:
        await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
        done = [await d.submit("dash.echo", payload={"n": i}) for i in range(5)]
        failed = await d.submit("dash.fail", payload={"why": "on purpose"})
        for job_id in done:
            row = page.locator(f'tr[data-job="{job_id}"]')
            await expect(row.locator("td").nth(2)).to_have_text("completed", timeout=WAIT_MS)
        await expect(page.locator(f'tr[data-job="{failed}"] td').nth(2)).to_have_text("dead", timeout=WAIT_MS)
        await page.locator(f'tr[data-job="{failed}"] a').click()
        await expect(page.locator("#job-state")).to_have_text("dead", timeout=WAIT_MS)
        await expect(page.locator("#error")).to_contain_text("RuntimeError: broken on purpose")
        await expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last)")
        await expect(page.locator("#traceback")).to_contain_text("dashboard_app.py")
        await expect(page.locator("#payload")).to_contain_text('"why": "on purpose"')  # read from its record
        timeline = page.locator("#timeline tbody tr td:nth-child(2)")
        await expect(timeline).to_have_text(["queued", "active", "failed", "dead"], timeout=WAIT_MS)
        await page.reload()  # the timeline is recorded, not only what this page saw
        await expect(timeline).to_have_text(["queued", "active", "failed", "dead"], timeout=WAIT_MS)


async def test_a_job_page_read_behind_the_live_feed_catches_up(
    chromium: str, open_deployment: Deployment
) -> None:
    """The job's first reads answer from a projection that has not yet seen the job (404),
    then not its last state (it is written in batches): the page reads the job again until
    it agrees with the live feed."""
    d = open_deployment
    async with opened(chromium, f"{d.gateway}/#/jobs") as page:
        await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
        job_id = await d.submit("dash.echo", payload={"n": 1})
        row = page.locator(f'tr[data-job="{job_id}"]')
        await expect(row.locator("td").nth(2)).to_have_text("completed", timeout=WAIT_MS)
        reads: list[str] = []

        async def behind(route: Route) -> None:
            if not reads:  # as a projection that has not seen the job
                reads.append("unknown")
                await route.fulfill(status=404, json={"detail": f"no job {job_id}"})
                return
            answer = await route.fetch()
            job = await answer.json()
            if len(reads) == 1:  # as a projection that saw only `queued`
                job |= {"state": "queued", "attempt": 1, "updated_at": job["created_at"], "result": None}
            reads.append(job["state"])
            await route.fulfill(response=answer, json=job)

        await page.route(lambda url: url == f"{d.api}/jobs/{job_id}", behind)
        await row.locator("a").click()
        await expect(page.locator("#job-state")).to_have_text("completed", timeout=WAIT_MS)
        assert reads[:2] == ["unknown", "queued"] and reads[-1] == "completed"


async def test_a_dead_letter_replayed_from_the_page_completes(
    chromium: str, open_deployment: Deployment
) -> None:
    d = open_deployment
    job_id = await d.submit("dash.until_fixed")
    async with opened(chromium, f"{d.gateway}/#/dlq") as page:
        row = page.locator(f'tr[data-dead="{job_id}"]')
        for _ in range(30):  # the list is read when the page opens: filter again until indexed
            await page.get_by_role("button", name="Filter").click()
            if await row.count():
                break
            await page.wait_for_timeout(500)
        await row.locator("a").click()
        await expect(page.locator(".attempt .error").first).to_contain_text("not fixed yet", timeout=WAIT_MS)
        d.fixed.write_text("fixed")
        await page.locator("#replay-one").click()
        await expect(page.locator("#replay-progress")).to_have_attribute(
            "data-state", "done", timeout=WAIT_MS
        )
        await expect(page.locator("#replay-progress")).to_contain_text("1 replayed")
        await page.get_by_text("replayed as").locator("a").click()
        await expect(page.locator("#job-state")).to_have_text("completed", timeout=WAIT_MS)


async def test_a_delayed_job_is_cancelled_from_the_page(chromium: str, open_deployment: Deployment) -> None:
    d = open_deployment
    later = await d.submit("dash.echo", delay_ms=3_600_000)
    async with opened(chromium, f"{d.gateway}/#/delayed") as page:
        row = page.locator(f'tr[data-job="{later}"]')
        await expect(row).to_be_visible(timeout=WAIT_MS)
        await row.get_by_role("button", name="Cancel").click()
        await expect(row).to_have_count(0, timeout=WAIT_MS)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{d.api}/jobs/{later}")).json()["state"] == "cancelled"


async def test_queues_show_depths_and_live_counts(chromium: str, open_deployment: Deployment) -> None:
    d = open_deployment
    async with opened(chromium, f"{d.gateway}/") as page:
        await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
        await expect(page.locator('tr[data-queue="normal"]')).to_be_visible(timeout=WAIT_MS)
        await d.submit("dash.echo")
        await expect(page.locator('.card[data-state="completed"] b')).to_have_text("1", timeout=WAIT_MS)
        wait = page.locator('.card[data-rate="mean queue wait, ms"] polyline')
        await expect(wait).to_have_count(1)  # a sparkline of the waits the `active` events carry


async def test_the_page_resumes_after_a_gateway_restart_without_missing_a_job(
    chromium: str, open_deployment: Deployment
) -> None:
    """Jobs that complete while the gateway is down reach the page once it is back: it
    reconnects with its cursor and the gateway reads what it missed back from Kafka."""
    d = open_deployment
    async with opened(chromium, f"{d.gateway}/#/jobs") as page:
        await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
        before = await d.submit("dash.echo")
        await expect(page.locator(f'tr[data-job="{before}"] td').nth(2)).to_have_text(
            "completed", timeout=WAIT_MS
        )
        restarted = asyncio.create_task(asyncio.to_thread(d.restart_gateway))
        await expect(page.locator("#conn")).not_to_have_text("live", timeout=WAIT_MS)
        during = [await d.submit("dash.echo", payload={"n": i}) for i in range(5)]
        await restarted
        await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
        for job_id in during:
            cell = page.locator(f'tr[data-job="{job_id}"] td').nth(2)
            await expect(cell).to_have_text("completed", timeout=WAIT_MS)
        assert await page.locator("#jobs tbody tr").count() == 6  # the six jobs, none lost


async def test_workers_page_lists_the_running_worker(chromium: str, open_deployment: Deployment) -> None:
    """The deployment's one worker, with its partitions and concurrency, heard from lately."""
    d = open_deployment
    async with opened(chromium, f"{d.gateway}/#/workers") as page:
        row = page.locator("#workers tbody tr")
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await expect(row.locator("td").nth(1)).to_have_text("dashboard-test")
        await expect(row.locator("td").nth(2)).to_have_text("0 / 32")
        await expect(row.locator("td").nth(5)).to_contain_text("jobs.high[0]", timeout=WAIT_MS)


async def test_without_a_key_the_page_asks_for_one(
    chromium: str, env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """With keys required, the page asks for one, says when one is refused, and goes live
    with a good one."""
    with deployment(env, tmp_path, auth=True) as d:
        async with opened(chromium, f"{d.gateway}/#/jobs") as page:
            await expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
            await page.locator("#login-key").fill("js_0123456789ab_not-a-real-key-at-all")
            await page.get_by_role("button", name="Use this key").click()
            await expect(page.locator("#login-error")).to_contain_text("not valid", timeout=WAIT_MS)
            assert d.key is not None
            await page.locator("#login-key").fill(d.key)
            await page.get_by_role("button", name="Use this key").click()
            await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
            job_id = await d.submit("dash.echo")
            row = page.locator(f'tr[data-job="{job_id}"]')
            await expect(row.locator("td").nth(2)).to_have_text("completed", timeout=WAIT_MS)


async def test_a_schedule_is_run_paused_and_followed_from_the_page(
    chromium: str, open_deployment: Deployment
) -> None:
    """The schedules page lists a schedule with its next run; "Run now" fires one occurrence,
    whose job shows completed among the schedule's runs and links back; "Pause" pauses it."""
    d = open_deployment
    async with httpx.AsyncClient(timeout=10) as client:
        body = {"cron": "30 2 * * *", "tz": "Europe/Berlin", "type": "dash.echo", "payload": {"n": 1}}
        assert (await client.put(f"{d.api}/schedules/nightly", json=body)).status_code == 201
    async with opened(chromium, f"{d.gateway}/#/schedules") as page:
        row = page.locator('tr[data-schedule="nightly"]')
        await expect(row.locator("td").nth(1)).to_have_text("active", timeout=WAIT_MS)
        await expect(row.locator("td").nth(4)).to_contain_text(":30:00Z")  # 02:30 Berlin, in UTC
        await row.get_by_role("button", name="Run now").click()
        fired = page.locator("#fired a")
        await expect(fired).to_contain_text("sched:nightly:", timeout=WAIT_MS)
        job_id = await fired.inner_text()
        await row.locator("a").click()
        run = page.locator(f'#runs tr[data-job="{job_id}"]')
        await expect(run.locator("td").nth(2)).to_have_text("completed", timeout=WAIT_MS)
        await page.get_by_role("button", name="Pause").click()
        await expect(page.locator("#schedule-state")).to_have_text("paused", timeout=WAIT_MS)
        await expect(page.locator("#next-runs")).to_have_text("none")
        await run.locator("a").click()
        await expect(page.locator("#schedule a")).to_have_text("nightly", timeout=WAIT_MS)
