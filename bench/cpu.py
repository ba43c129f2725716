"""Where the machine's CPU went during a measurement, from `/proc` (Linux only).

`CpuMeter` counts clock ticks per process of ours (Kafka, Redis, this process, and each
child), the children reaped meanwhile as one line, and the rest of the machine's busy time
as 'everything else', so a figure measured while something else ran says so. A JVM's
JIT compiler threads get a line of their own (`kafka JIT`): a fresh broker compiles its hot
paths for a minute or more of load, at nice 19 (`jobstream.cli.stack`), and that warm-up is
not what a request costs the broker once warm.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def _stat_ticks(stat: Path) -> int:
    """CPU time (user + system, clock ticks) in a `/proc` stat file; 0 once it is gone."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _ticks(pid: int) -> int:
    return _stat_ticks(Path(f"/proc/{pid}/stat"))


def _compiler_ticks(pid: int) -> int:
    """CPU time (clock ticks) of a JVM's JIT compiler threads ("C1 CompilerThre", "C2 ...")."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            compiler = " CompilerThre" in (task / "comm").read_text()
        except OSError:  # the thread is gone
            continue
        if compiler:
            total += _stat_ticks(task / "stat")
    return total


def _reaped_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> int:
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal


class CpuMeter:
    """Where the machine's CPU went during a measurement: per process of ours, and the
    rest (a finished load generator, and anything else running on the machine)."""

    def __init__(self, steady: dict[str, int], jvm: str = "kafka") -> None:
        self._steady = steady
        self._jvm = jvm if jvm in steady else None  # whose compiler threads get a line of their own
        self._jit_base = _compiler_ticks(steady[jvm]) if self._jvm else 0
        self._start = time.monotonic()
        self._busy = _machine_busy()
        self._base = {name: _ticks(pid) for name, pid in steady.items()}
        self._reaped = _reaped_s()

    def cores(self, started: dict[str, int]) -> tuple[dict[str, float], float, float]:
        """Cores each process used on average since the meter started (busiest first), the
        rest of the machine's busy cores, and the seconds measured."""
        hz, secs = os.sysconf("SC_CLK_TCK"), max(time.monotonic() - self._start, 1e-9)
        used = {n: _ticks(p) - self._base[n] for n, p in self._steady.items()}
        used.update({n: _ticks(p) for n, p in started.items()})
        if self._jvm is not None:
            jit = max(0, _compiler_ticks(self._steady[self._jvm]) - self._jit_base)
            used[self._jvm] -= jit
            used[f"{self._jvm} JIT"] = jit
        if reaped := round((_reaped_s() - self._reaped) * hz):  # children that exited meanwhile
            used["exited children (load generator)"] = reaped
        rest = _machine_busy() - self._busy - sum(used.values())
        busiest = sorted(used.items(), key=lambda x: -x[1])
        return {n: t / hz / secs for n, t in busiest if t > 0}, max(rest, 0) / hz / secs, secs

    def report(self, started: dict[str, int]) -> str:
        used, rest, secs = self.cores(started)
        parts = [f"{n} {c:.2f}" for n, c in used.items()]
        return (
            f"CPU cores busy on average over {secs:.1f} s (of {os.cpu_count()}): {', '.join(parts)}, "
            f"everything else {rest:.2f}"
        )


__all__ = ["CpuMeter"]
