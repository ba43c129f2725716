"""The WebSocket protocol of `/ws`: what a client sends and the frames the gateway sends.

Client -> gateway (JSON text), subscriptions accumulate:

    {"subscribe":   {"jobs": [id, ...], "types": [type, ...], "all": true, "cursor": "..."}}
    {"unsubscribe": {"jobs": [id, ...], "types": [type, ...], "all": true}}

Gateway -> client:

    {"subscribed": {"jobs": <count>, "types": [...], "all": bool}, "cursor": "..."}
        after every (un)subscribe; `cursor` is the feed's position at that moment, or, for
        a subscribe that resumes from a cursor, that cursor (the replay carries on from it)
    {"snapshot": [<job state, as GET /jobs/{id}>, ...]}
        after subscribing to job ids: the known ones' current state
    {"events": [<status event>, ...], "cursor": "..."}
        matching events in order; at most one frame per client per feed batch
    {"error": "<what is wrong and what to send instead>", "code": "..."}
        the connection stays open; `code` is present for errors a program acts on

A message over `MAX_MESSAGE_BYTES` closes the connection with 1009 (the server enforces it).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from gateway.errors import ProtocolError
from schemas import TYPE_PATTERN

MAX_JOBS_PER_MESSAGE = 10_000
MAX_TYPES_PER_MESSAGE = 1_000
# The server refuses a larger message (close 1009) before parsing it; the largest valid one
# (10,000 ids and 1,000 types of 128 characters, a cursor) is about 1.5 MB.
MAX_MESSAGE_BYTES = 2 << 20

EXAMPLE = (
    'send {"subscribe": {"jobs": ["<job id>"], "types": ["<job type>"], "all": true, '
    '"cursor": "<cursor>"}} (any of the keys) or {"unsubscribe": {...the same keys but cursor}}'
)

JobId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
JobType = Annotated[str, StringConstraints(pattern=TYPE_PATTERN)]


class Selection(BaseModel):
    """Which events: these job ids, these job types, or (`all`) every event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: list[JobId] = Field(default_factory=list, max_length=MAX_JOBS_PER_MESSAGE)
    types: list[JobType] = Field(default_factory=list, max_length=MAX_TYPES_PER_MESSAGE)
    all: bool = False


class Subscribe(Selection):
    """A selection to add, and optionally where to resume from."""

    cursor: str | None = Field(None, min_length=1, max_length=8_192)


class ClientMessage(BaseModel):
    """Exactly one of `subscribe` or `unsubscribe`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscribe: Subscribe | None = None
    unsubscribe: Selection | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ClientMessage:
        if (self.subscribe is None) == (self.unsubscribe is None):
            raise ValueError("a message holds exactly one of 'subscribe' or 'unsubscribe'")
        return self


def parse_message(text: str | None) -> ClientMessage:
    """Parse one client message; raise `ProtocolError` saying what is wrong and what to send."""
    if text is None:
        raise ProtocolError(f"binary frames are not understood; {EXAMPLE} as a text frame")
    try:
        return ClientMessage.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        what = f"{where}: {err['msg']}" if where else err["msg"]
        raise ProtocolError(f"bad message ({what}); {EXAMPLE}") from None


def subscribed_frame(jobs: int, types: set[str], all_: bool, cursor: str) -> str:
    body = {"subscribed": {"jobs": jobs, "types": sorted(types), "all": all_}, "cursor": cursor}
    return orjson.dumps(body).decode()


def snapshot_frame(states: list[dict[str, Any]]) -> str:
    return orjson.dumps({"snapshot": states}).decode()


def error_frame(message: str, code: str | None = None) -> str:
    body: dict[str, str] = {"error": message}
    if code is not None:
        body["code"] = code
    return orjson.dumps(body).decode()


def events_frame(events: list[dict[str, Any]], cursor: str) -> str:
    return orjson.dumps({"events": events, "cursor": cursor}).decode()
