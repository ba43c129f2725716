"""jobstream: the shared runtime and the tools.

The shared runtime: settings, Kafka, the status publisher, the job-state projection and
its projector, the topic-to-Redis sink, the HTTP error shapes, the cursor codec; it
imports no service. The tools: the command line, the local stack (a real Kafka broker and
Redis), benchmarks. The client for applications: `from jobstream import Client` (asyncio)
or `SyncClient` (`jobstream.client`), loaded when first named here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typed for callers; loaded on first use (`__getattr__`)
    from jobstream.client import Client, SyncClient

__version__ = "0.1.0"
__all__ = ["Client", "SyncClient", "__version__"]


def __getattr__(name: str) -> Any:
    """`Client` and `SyncClient` on first use: the services importing `jobstream.*` never
    load the client's HTTP and WebSocket libraries."""
    if name in ("Client", "SyncClient"):
        from jobstream import client

        return getattr(client, name)
    raise AttributeError(f"module 'jobstream' has no attribute {name!r}")
