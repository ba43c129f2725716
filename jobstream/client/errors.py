"""What the client raises: the API's refusals, one class a status, and a job's bad ends.

JobstreamError
 ├── ApiError                 the API answered 4xx or 5xx: `status`, `detail`, `errors`
 │    ├── BadRequest (400), Unauthorized (401), Forbidden (403), NotFound (404),
 │    │   Conflict (409), TooLarge (413), InvalidInput (422, `field` names the first)
 │    └── Unavailable (503)   Kafka or Redis down (`service`), still so at the deadline
 ├── Unreachable              no answer at all (connection refused, reset, timed out)
 ├── JobFailed                the job is dead: `error_type`, `message`, `traceback`, `attempt`
 │    └── JobExpired          dead because it was not started before its expiry
 └── JobCancelled
`TimeoutError` (the builtin) when `result()` waited its timeout out.
"""

from __future__ import annotations

from typing import Any


class JobstreamError(Exception):
    """Anything the client raises of its own."""


class ApiError(JobstreamError):
    """The API refused the request; `detail` is its sentence, `errors` its field problems
    (`[{"field", "message"}]`), `body` the whole answer."""

    status = 0

    def __init__(self, status: int, body: Any) -> None:
        body = body if isinstance(body, dict) else {"detail": str(body)}
        self.status = status
        self.body: dict[str, Any] = body
        self.detail: str = str(body.get("detail", ""))
        self.errors: list[dict[str, str]] = list(body.get("errors") or [])
        super().__init__(f"{status}: {self.detail}")

    @property
    def field(self) -> str | None:
        """The first field the API named, e.g. `payload.n`."""
        return self.errors[0].get("field") if self.errors else None


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


class InvalidInput(ApiError):
    status = 422


class Unavailable(ApiError):
    """503: what is down (`service`: `kafka` or `redis`) and when to try again."""

    status = 503

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        super().__init__(status, body)
        self.service: str | None = self.body.get("service")
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[ApiError]] = {
    c.status: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, InvalidInput)
}


def api_error(status: int, body: Any, retry_after: float | None = None) -> ApiError:
    """The exception for an answer with `status` (>= 400)."""
    if status == 503:
        return Unavailable(status, body, retry_after)
    return _BY_STATUS.get(status, ApiError)(status, body)


class Unreachable(JobstreamError):
    """The API (or the gateway) did not answer: refused, reset or timed out."""


class JobFailed(JobstreamError):
    """The job ended dead: its last error, the attempt it happened on, and why it is dead
    (`reason`: `exhausted`, `non_retryable`, `timeout`, `unknown_type`, ...)."""

    def __init__(self, job_id: str, state: dict[str, Any]) -> None:
        error = state.get("error") or {}
        self.job_id = job_id
        self.reason: str | None = state.get("reason")
        self.attempt: int = int(state.get("attempt") or 1)
        self.error_type: str = str(error.get("type") or self.reason or "Dead")
        self.message: str = str(error.get("message") or "")
        self.traceback: str | None = error.get("traceback")
        super().__init__(f"job {job_id} is dead ({self.reason}) after attempt {self.attempt}: "
                         f"{self.error_type}: {self.message}")  # fmt: skip


class JobExpired(JobFailed):
    """The job was not started before its expiry (`ttl_ms` or `expires_at`)."""


class JobCancelled(JobstreamError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was cancelled")


__all__ = [
    "ApiError", "BadRequest", "Conflict", "Forbidden", "InvalidInput", "JobCancelled", "JobExpired",
    "JobFailed", "JobstreamError", "NotFound", "TooLarge", "Unauthorized", "Unavailable", "Unreachable",
    "api_error",
]  # fmt: skip
