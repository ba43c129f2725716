"""Topic and header names. Every topic name carries a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.job import Priority

SCHEMA_VERSION = b"1"
HEADER_SCHEMA = "js-schema"
HEADER_TYPE = "js-type"
HEADER_ATTEMPT = "js-attempt"
HEADER_DUE = "js-due-ms"
HEADER_TRACEPARENT = "traceparent"  # W3C Trace Context, when the client sent one


@dataclass(frozen=True, slots=True)
class Topics:
    """The names of one deployment's topics."""

    prefix: str = "jobstream"

    def jobs(self, priority: Priority) -> str:
        return f"{self.prefix}.jobs.{priority.value}"

    @property
    def job_topics(self) -> tuple[str, ...]:
        """The priority topics, highest first."""
        return tuple(self.jobs(p) for p in Priority.ordered())

    @property
    def status(self) -> str:
        return f"{self.prefix}.jobs.status"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.jobs.dlq"

    @property
    def control(self) -> str:
        return f"{self.prefix}.jobs.control"

    def retry(self, tier: str) -> str:
        return f"{self.prefix}.jobs.retry.{tier}"

    def priority_of(self, topic: str) -> Priority | None:
        """The priority a job topic carries, or None for any other topic."""
        head = f"{self.prefix}.jobs."
        if topic.startswith(head):
            try:
                return Priority(topic[len(head) :])
            except ValueError:
                return None
        return None

    @property
    def workers_group(self) -> str:
        return f"{self.prefix}.workers"

    @property
    def projector_group(self) -> str:
        return f"{self.prefix}.projector"
