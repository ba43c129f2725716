"""The Python client: enqueue jobs from an application, await their results, follow events.

`Client` (asyncio) and `SyncClient` (the same, blocking); `Job` / `SyncJob` are the handles
`submit` returns; `jobstream.client.errors` says what each call may raise. Also importable
from the top: `from jobstream import Client`.
"""

from __future__ import annotations

from jobstream.client.core import Client, Job
from jobstream.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobstreamError,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from jobstream.client.sync import SyncClient, SyncJob

__all__ = [
    "ApiError", "BadRequest", "Client", "Conflict", "Forbidden", "InvalidInput", "Job", "JobCancelled",
    "JobExpired", "JobFailed", "JobstreamError", "NotFound", "SyncClient", "SyncJob", "TooLarge",
    "Unauthorized", "Unavailable", "Unreachable",
]  # fmt: skip
