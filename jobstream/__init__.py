"""jobstream: the shared runtime and the tools.

The shared runtime: settings, Kafka, the status publisher, the job-state projection and
its projector, the topic-to-Redis sink, the HTTP error shapes, the cursor codec; it
imports no service. The tools: the command line, the local stack (a real Kafka broker and
Redis), benchmarks.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
