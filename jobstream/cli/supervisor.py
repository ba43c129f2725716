"""Child processes of `jobstream dev`: start, watch, restart, stop in groups, echo logs.

Policy when a child dies on its own: it is restarted after a backoff (1 s, doubling up to
30 s), because in development a crashing handler or a bad edit should not take Kafka and
Redis down with it. A child that dies `MAX_CRASHES` times within `CRASH_WINDOW_S` is
hopeless (a config error, a port in use): `Supervisor.poll` then reports it as fatal and
the caller shuts everything down.

Every method runs on the main thread: the kernel's PR_SET_PDEATHSIG fires when the
*thread* that forked a child exits, so a child spawned from a short-lived thread would be
killed with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobstream.cli import procs

MAX_CRASHES = 5
CRASH_WINDOW_S = 60.0
BACKOFF_MAX_S = 30.0

# Reentrant: the signal handler prints from the main thread, which may be inside say() already.
_print_lock = threading.RLock()


def say(msg: str) -> None:
    """One line on the terminal; the echo thread prints through the same lock."""
    with _print_lock:
        print(f"[dev] {msg}", flush=True)


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    env: Mapping[str, str]
    proc: subprocess.Popen[bytes] | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Owns the children. `poll()` from the main loop; `stop_group()` to shut down."""

    def __init__(self, *, force: Callable[[], bool], echo: LogEcho | None = None) -> None:
        self.children: dict[str, Child] = {}
        self._force = force  # true once the user asked a second time: stop waiting, kill
        self._echo = echo

    def add(self, name: str, args: Sequence[str], log: Path, env: Mapping[str, str]) -> Child:
        child = Child(name, list(args), log, env)
        self.children[name] = child
        self._start(child)
        return child

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.proc = procs.spawn(child.args, log=child.log, env=child.env)

    def first_dead(self) -> Child | None:
        """A child that has exited, if any (used while starting up, when any exit is fatal)."""
        return next((c for c in self.children.values() if c.proc is not None and not c.alive), None)

    def poll(self) -> str | None:
        """Restart children that died; returns a message when one has died too often."""
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is None:  # waiting for its backoff to pass
                if child.restart_at is not None and now >= child.restart_at:
                    say(f"restarting {child.name}")
                    self._start(child)
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.proc = None
            while child.crashes and now - child.crashes[0] > CRASH_WINDOW_S:
                child.crashes.popleft()
            child.crashes.append(now)
            if len(child.crashes) >= MAX_CRASHES:
                return (
                    f"{child.name} died {len(child.crashes)} times within {CRASH_WINDOW_S:.0f}s "
                    f"(last exit {code}); giving up. Its log ({child.log}) ends with:\n"
                    f"{procs.tail(child.log, 20)}"
                )
            delay = min(BACKOFF_MAX_S, 2.0 ** (len(child.crashes) - 1))
            child.restart_at = now + delay
            say(f"{child.name} exited unexpectedly with {code}; restarting in {delay:.0f}s (log {child.log})")
        return None

    def stop_group(self, names: Sequence[str], *, what: str, grace_s: float) -> None:
        """SIGTERM the named children together, wait up to `grace_s`, then SIGKILL.
        Prints progress; returns early with SIGKILL once `force()` turns true."""
        group = [c for n in names if (c := self.children.get(n)) is not None]
        for c in group:
            c.restart_at = None  # a child waiting for a restart stays stopped
        stop_procs(
            [(c.name, c.proc) for c in group],
            what=what,
            grace_s=grace_s,
            force=self._force,
            on_exit=self._echo.flush if self._echo is not None else None,
        )
        for c in group:
            c.proc = None

    def kill_all(self) -> None:
        for c in self.children.values():
            if c.alive:
                assert c.proc is not None
                c.proc.kill()
                c.proc.wait()


def stop_procs(
    group: Sequence[tuple[str, subprocess.Popen[bytes] | None]],
    *,
    what: str,
    grace_s: float,
    force: Callable[[], bool],
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Stop several processes at once: SIGTERM, wait for all up to `grace_s`, then SIGKILL.
    `on_exit` runs once they are gone, before the report (to print their last log lines)."""
    live = [(n, p) for n, p in group if p is not None and p.poll() is None]
    if not live:
        return
    say(f"stopping {what} ({', '.join(n for n, _ in live)}; up to {grace_s:.0f}s)")
    for _, p in live:
        p.send_signal(signal.SIGTERM)
    start = time.monotonic()
    next_note = start + 5.0
    while (waiting := [(n, p) for n, p in live if p.poll() is None]) and not force():
        now = time.monotonic()
        if now - start > grace_s:
            say(f"{', '.join(n for n, _ in waiting)} still running after {grace_s:.0f}s: killing")
            break
        if now >= next_note:
            say(f"waiting for {', '.join(n for n, _ in waiting)} ({now - start:.0f}s/{grace_s:.0f}s)")
            next_note = now + 5.0
        time.sleep(0.05)
    for _, p in live:
        if p.poll() is None:
            p.kill()
        p.wait()
    if on_exit is not None:
        on_exit()
    codes = ", ".join(f"{n} {_describe(p.returncode)}" for n, p in live)
    say(f"stopped {what} in {time.monotonic() - start:.1f}s ({codes})")


def _describe(code: int) -> str:
    # uvicorn re-raises SIGTERM after a clean shutdown and the JVM exits 143 (128 + 15):
    # both mean "stopped as asked".
    if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        return "ok"
    if code == -signal.SIGKILL:
        return "killed"
    return f"exit {code}"


class LogEcho:
    """Follows log files and prints their new lines to the terminal as `name | line`.

    The children write to their files, not to a pipe we must drain, so a slow terminal or
    a supervisor that dies never blocks or kills a child; the files stay complete."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self._files: dict[str, tuple[Path, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()  # flush() and the thread must not read twice
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, name="log-echo", daemon=True)
        self._width = 8

    def follow(self, name: str, path: Path) -> None:
        """Echo what `path` gets from now on."""
        start = path.stat().st_size if path.exists() else 0
        with self._lock:
            self._files[name] = (path, start)
            self._width = max(self._width, len(name))

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Print what is left and stop. Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def flush(self) -> None:
        """Print the whole lines written so far, now."""
        self._drain(final=False)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain(final=False)
        self._drain(final=True)

    def _drain(self, *, final: bool) -> None:
        with self._drain_lock:
            self._drain_locked(final=final)

    def _drain_locked(self, *, final: bool) -> None:
        with self._lock:
            files = list(self._files.items())
        for name, (path, offset) in files:
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(1 << 20)
            except OSError:
                continue
            end = len(chunk) if final else chunk.rfind(b"\n") + 1  # only whole lines until the end
            if end <= 0:
                continue
            text = chunk[:end].decode(errors="replace")
            with self._lock:
                self._files[name] = (path, offset + end)
            lines = "".join(f"{name:<{self._width}} | {line}\n" for line in text.splitlines())
            with _print_lock:
                sys.stdout.write(lines)
                sys.stdout.flush()


def echo_enabled() -> bool:
    return os.environ.get("JOBSTREAM_DEV_ECHO", "1") not in ("0", "false", "no")
