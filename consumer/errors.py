"""Errors of the worker runtime.

WorkerError
 ├── ConfigError        a worker app is set up wrongly (duplicate type, bad name)
 └── AttemptError       fails one attempt of a job (raised by its handler or for it)
      ├── NonRetryable  a handler says: do not try this job again
      ├── JobTimeout    the job ran past its timeout_s and was cancelled
      └── ResultError   the handler returned something that is not JSON or too large
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker runtime raises."""


class ConfigError(WorkerError):
    """The worker app is configured wrongly; the message says what to fix."""


class AttemptError(WorkerError):
    """An error that fails one attempt of a job. (Not `schemas.JobError`: that is the
    error a status event reports.)"""


class NonRetryable(AttemptError):
    """Raise from a handler to fail the job with no further attempts."""


class JobTimeout(AttemptError):
    """The job exceeded its `timeout_s`."""


class ResultError(AttemptError):
    """The handler's result cannot be published."""
