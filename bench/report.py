"""The report `python -m bench` prints and writes to `docs/BENCHMARKS.md`.

`render` is pure but for `machine()`, which reads `/proc` and `/etc/os-release` ('?' for
what it cannot read). The format is what the document has always had: how to reproduce,
the command, the machine, the table (figure, target, met), then one note a line.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

from bench.harness import Bench
from jobstream.cli.stack import KAFKA_VERSION


def machine() -> list[tuple[str, str]]:
    """The machine the figures come from, as (what, value) rows; '?' for what is unreadable."""

    def grep(path: str, key: str) -> str:
        try:
            text = Path(path).read_text()
        except OSError:
            return "?"
        m = re.search(rf"^{key}\s*[:=]\s*\"?(.*?)\"?$", text, re.M)
        return m[1].strip() if m else "?"

    mem_kb = grep("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 1024**2:.1f} GiB" if mem_kb.isdigit() else "?"
    return [
        ("CPU", grep("/proc/cpuinfo", "model name")),
        ("Cores", str(os.cpu_count())),
        ("Memory", mem),
        ("OS", f"{grep('/etc/os-release', 'PRETTY_NAME')}, Linux {platform.release()}"),
        ("Python", platform.python_version()),
        ("Kafka", f"{KAFKA_VERSION} (single KRaft node, local)"),
        ("Date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def render(bench: Bench, command: str, quick: bool) -> str:
    """The whole document: how to reproduce, the command, the machine, the table, the notes."""
    mark = {True: "yes", False: "**no**", None: "-"}
    lines = [
        "# Benchmarks",
        "",
        "Reproduce from a source checkout (the benchmarks are not in the installed package): "
        "`make bench`, or without the Makefile, from the project root with the venv installed "
        "(`python3 -m venv .venv && .venv/bin/pip install -e .`), Java 17+, Maven and "
        "redis-server (installed with apt-get when root) and optionally `wrk`, run "
        "`.venv/bin/python -m bench` (add `--quick` for a short run). It starts its "
        "own Kafka and Redis under `.data/bench/` on free ports and stops everything at the end; "
        "child logs are kept in `.data/bench/logs/`.",
        "",
        f"Command: `{command}`{' (quick run: smaller figures)' if quick else ''}",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine()),
        "",
        "| scenario | measured | target | met |",
        "| --- | ---: | ---: | :---: |",
        *(f"| {r.scenario} | {r.figure} | {r.target} | {mark[r.met]} |" for r in bench.rows),
        "",
        "## Details",
        "",
        "CPU lines: average cores each process used during the measurement; 'everything else' is "
        "the rest of the machine's busy time (other programs running meanwhile).",
        "",
        *(f"- {n}" for n in bench.notes),
        "",
    ]
    return "\n".join(lines)


__all__ = ["machine", "render"]
