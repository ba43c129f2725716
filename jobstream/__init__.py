"""jobstream: the command line, settings and the local stack (a real Kafka broker and Redis)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
