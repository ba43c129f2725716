"""The frames of `/ws` as models: what `gateway.protocol` says in prose, for the AsyncAPI
document (`gateway.asyncapi`).

Documentation only: the gateway parses client messages with `gateway.protocol.ClientMessage`
and sends frames as JSON text built by `gateway.protocol`'s helpers, never through these
(a frame per client per batch is on the hot path). A client message is `SubscribeMessage`
or `UnsubscribeMessage` (one key each; `ClientMessage` holds both and checks that exactly
one is set). Frames forbid other keys, so tests/test_asyncapi.py, which validates the
frames a real gateway sends, fails when a frame gains a key this module does not describe.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from gateway.protocol import MAX_MESSAGE_BYTES, Selection, Subscribe
from schemas import JobError, Progress, StatusEvent

Absent = SkipJsonSchema[None]  # a key the frame may leave out (never null)

# What ends a connection, by close code. A handshake from a page on another site (its
# Origin not allowed) is refused before it is accepted: the client sees HTTP 403.
CLOSE_CODES = {
    1001: "server shutting down",
    1008: "too slow (`too slow: ...`: fell `client_queue_max` events or `client_queue_bytes` "
    "behind), or sends too fast (`too many messages: ...`)",
    1009: f"a client message larger than {MAX_MESSAGE_BYTES} bytes",
    1013: "the API key cannot be checked now (Redis does not answer): try again later",
    4401: "no API key, or a key or one-time token that is unknown, revoked, used or expired",
    4403: "the API key lacks the scope `read`",
}


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubscribeMessage(_Frame):
    """Follow more: job ids, job types or (`all`) everything; subscriptions add up. With
    `cursor` (from any frame), first every event after it that the status topic retains."""

    subscribe: Subscribe


class UnsubscribeMessage(_Frame):
    """Stop following some of what the connection follows; the rest is ignored."""

    unsubscribe: Selection


class Subscription(BaseModel):
    jobs: int = Field(description="how many job ids the connection follows")
    types: list[str] = Field(description="the job types it follows, sorted")
    all: bool = Field(description="whether it follows every event")


class SubscribedFrame(_Frame):
    """The answer to every (un)subscribe: what the connection follows now."""

    subscribed: Subscription
    cursor: str = Field(
        description="the feed's position now; for a subscribe with a cursor, that cursor "
        "(the replay carries on from it)"
    )


class JobSnapshot(BaseModel):
    """A job's latest state, as `GET /jobs/{id}` answers it (the projection's view)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: str
    state: str = Field(description="a status event's state, `active` while in `progress`")
    attempt: int
    progress: Progress | None
    result: Any
    error: JobError | None = Field(description="the last failure's, until the job runs again")
    parent_id: str | None
    children: list[str] = Field(description="the ids of its follow-ups, once it completed")
    reason: str | None = Field(description="why it is dead or cancelled")
    priority: str | None
    key: str | None
    schedule: str | None = Field(description="the recurring schedule this job is an occurrence of")
    occurrence_at: int | None
    created_at: int = Field(description="ms since the epoch, like every time here")
    queued_at: int | None = Field(description="when its record went on its priority topic")
    updated_at: int


class SnapshotFrame(_Frame):
    """After a subscribe naming job ids: the current state of the ones known (unknown ids,
    and jobs of types the connection's key may not see, are left out)."""

    snapshot: list[JobSnapshot]


class EventsFrame(_Frame):
    """Status events the connection follows, in each job's order; at most one frame per
    connection per batch the gateway reads."""

    events: list[StatusEvent] = Field(min_length=1)
    cursor: str = Field(description="resume here (`subscribe.cursor`) to miss nothing after this frame")


class ErrorCode(enum.StrEnum):
    bad_cursor = "bad_cursor"  # the cursor is not one a gateway of this deployment sent
    too_many_jobs = "too_many_jobs"  # past the job ids one connection may follow
    forbidden = "forbidden"  # a job type the connection's key may not see: nothing subscribed
    snapshot_unavailable = "snapshot_unavailable"  # Redis does not answer: no snapshot
    replay_failed = "replay_failed"  # the events after the cursor could not be read back


class ErrorFrame(_Frame):
    """A message the gateway could not act on, or could act on only in part; the connection
    stays open."""

    error: str = Field(description="what is wrong and what to send instead")
    code: ErrorCode | Absent = Field(None, description="present for errors a program acts on")


CLIENT_MESSAGES: tuple[type[BaseModel], ...] = (SubscribeMessage, UnsubscribeMessage)
SERVER_FRAMES: tuple[type[BaseModel], ...] = (SubscribedFrame, SnapshotFrame, EventsFrame, ErrorFrame)


def frame_model(frame: dict[str, Any]) -> type[BaseModel]:
    """The model of a frame the gateway sent, by its first key."""
    for model in SERVER_FRAMES:
        if next(iter(model.model_fields)) in frame:
            return model
    raise ValueError(f"not a frame of /ws: {sorted(frame)}")
