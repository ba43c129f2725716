"""Errors of the worker runtime.

WorkerError
 ├── ConfigError        a worker app is set up wrongly (duplicate type, bad name)
 └── JobError           raised for, or by, one job
      ├── NonRetryable  a handler says: do not try this job again
      ├── JobTimeout    the job ran past its timeout_s and was cancelled
      └── ResultError   the handler returned something that is not JSON or too large
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker runtime raises."""


class ConfigError(WorkerError):
    """The worker app is configured wrongly; the message says what to fix."""


class JobError(WorkerError):
    """An error about one job."""


class NonRetryable(JobError):
    """Raise from a handler to fail the job with no further attempts."""


class JobTimeout(JobError):
    """The job exceeded its `timeout_s`."""


class ResultError(JobError):
    """The handler's result cannot be published."""
