"""The worker runtime: handler registry, fetch loop, priority dispatch, bounded
concurrency, offset tracking, progress and graceful drain."""

from __future__ import annotations

from consumer.app import HandlerSpec, JobContext, WorkerApp
from consumer.errors import AttemptError, ConfigError, JobTimeout, NonRetryable, ResultError, WorkerError
from consumer.run import run_worker, serve
from consumer.worker import Worker

__all__ = [
    "AttemptError",
    "ConfigError",
    "HandlerSpec",
    "JobContext",
    "JobTimeout",
    "NonRetryable",
    "ResultError",
    "Worker",
    "WorkerApp",
    "WorkerError",
    "run_worker",
    "serve",
]
