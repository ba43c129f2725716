"""`python -m bench` (or `make bench`): run the benchmarks and write `docs/BENCHMARKS.md`.

Flags as the former `jobstream bench`: `--quick` for smaller runs, `--only 1,3` for some
scenarios (then nothing is written), `--out PATH` for another report file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.harness import bench_cli
from jobstream.cli import tune_gc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description="measure throughput and latency on the local stack"
    )
    p.add_argument("--quick", action="store_true", help="smaller runs")
    p.add_argument("--out", default="docs/BENCHMARKS.md")
    p.add_argument("--only", help="comma-separated scenario numbers (1-6); does not write --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_gc()  # the measuring side collects as rarely as the services it measures
    return bench_cli(args)


if __name__ == "__main__":
    raise SystemExit(main())
