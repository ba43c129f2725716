"""The benchmarks: throughput and latency of the whole pipeline on this machine.

Run from a source checkout with `make bench` or `python -m bench` (`--quick`, `--only N`,
`--out PATH`). This package is deliberately not installed with jobstream (pyproject lists
only the service packages), so nothing installed may import it; it imports the installed
packages like any client would.
"""

from __future__ import annotations

__all__: list[str] = []
