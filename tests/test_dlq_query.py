"""Pure parts of dead-letter browsing and replay: the cursor codec, the filter, times, pacing."""

from __future__ import annotations

import pytest

from deadletters.cursor import Position, decode_cursor, encode_cursor
from deadletters.query import DlqFilter, ReplayRequest, build_filter, parse_time, summary
from deadletters.replay_run import Pacer
from jobstream.cursor import CursorError
from jobstream.http_errors import InvalidInput
from schemas import AttemptError, DeadLetter, DeadReason, JobEnvelope, Source


def dead(**fields: object) -> DeadLetter:
    base: dict[str, object] = {
        "id": "j1",
        "type": "email.send",
        "reason": DeadReason.exhausted,
        "job": JobEnvelope(id="j1", type="email.send"),
        "errors": [AttemptError(attempt=1, type="SMTPError", message="Connection refused", at=5)],
        "source": Source(topic="t.jobs.normal", partition=2, offset=9),
        "dead_at": 1_000,
    }
    return DeadLetter.model_validate({**base, **fields})


@pytest.mark.parametrize(
    "pos",
    [Position(0, "a"), Position(1_764_275_520_123, "0196f1c2-7a3b-7c00-8000-000000000000"),
     Position(5, "poison:p.jobs.normal:3:17"), Position(5, "ünï:cödé"), Position(2**62, "x" * 256)],
)  # fmt: skip
def test_cursor_round_trips(pos: Position) -> None:
    """decode(encode(p)) == p, and the cursor uses only URL-safe characters."""
    text = encode_cursor(pos)
    assert decode_cursor(text) == pos
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


@pytest.mark.parametrize(
    "text", ["", "2AAAA", "1!!!", "1MTI", "1" + "A" * 600, "1YWJj", "1OmFiYw", "1MTI6", "1LTE6YQ", "1MTI6YQ="]
)
def test_cursor_rejects_garbage(text: str) -> None:
    """Anything encode_cursor did not write raises CursorError with a reason."""
    with pytest.raises(CursorError):
        decode_cursor(text)


def test_cursor_refuses_bad_positions() -> None:
    """Negative times and empty or overlong ids cannot be encoded."""
    for pos in (Position(-1, "a"), Position(1, ""), Position(1, "x" * 257)):
        with pytest.raises(ValueError):
            encode_cursor(pos)


def test_positions_order_like_pages() -> None:
    """Positions compare by dead_at, then id: the order pages walk (reversed)."""
    assert Position(1, "b") > Position(1, "a") > Position(0, "z")


def test_parse_time_accepts_ms_and_rfc3339() -> None:
    """ms as int or digits, and RFC 3339 with a zone, all become ms since the epoch."""
    assert parse_time(1_700_000_000_000, "since") == 1_700_000_000_000
    assert parse_time("1700000000000", "since") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z", "since") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20.5+01:00", "since") == 1_700_000_000_500
    assert parse_time(None, "since") is None


@pytest.mark.parametrize("value", ["yesterday", "2023-11-14T22:13:20", "-5", True, 10**20])
def test_parse_time_names_the_field(value: object) -> None:
    """A bad time is a 422 naming the field."""
    with pytest.raises(InvalidInput) as info:
        parse_time(value, "until")  # type: ignore[arg-type]
    assert info.value.errors[0].field == "until"


def test_inverted_range_is_refused() -> None:
    """since after until is refused, naming 'until'."""
    with pytest.raises(InvalidInput) as info:
        build_filter(since=10, until=5)
    assert info.value.errors[0].field == "until"


def test_filter_matches_each_axis() -> None:
    """Types, reasons, ids, time range and q each narrow the selection; empty selects all."""
    d = dead()
    assert DlqFilter().matches(d)
    assert build_filter(types=["email.send", "x"]).matches(d)
    assert not build_filter(types=["x"]).matches(d)
    assert build_filter(reasons=[DeadReason.exhausted]).matches(d)
    assert not build_filter(reasons=[DeadReason.poison]).matches(d)
    assert build_filter(ids=["j1"]).matches(d) and not build_filter(ids=["j2"]).matches(d)
    assert build_filter(since=1_000, until=1_000).matches(d)
    assert not build_filter(since=1_001).matches(d) and not build_filter(until=999).matches(d)
    assert build_filter(q="CONNECTION").matches(d) and build_filter(q="smtp").matches(d)
    assert not build_filter(q="disk").matches(d)
    assert not build_filter(q="x").matches(dead(errors=[]))


def test_summary_shape() -> None:
    """A summary names the last error, the attempts and who replayed it."""
    errors = [AttemptError(attempt=i, type="E", message=f"m{i}", at=i) for i in (1, 2, 3)]
    s = summary(dead(errors=errors), "r1")
    assert s["attempts"] == 3 and s["last_error"] == {"type": "E", "message": "m3"}
    assert s["replayed_by"] == "r1" and s["source"] == {"topic": "t.jobs.normal", "partition": 2, "offset": 9}


def test_replay_request_defaults_to_dry_run() -> None:
    """An empty body is a dry run over everything, without force."""
    req = ReplayRequest.model_validate({})
    assert req.dry_run and not req.force and req.to_filter() == DlqFilter()


def test_pacer_spaces_jobs_to_the_rate() -> None:
    """At 10 jobs/s the 20th job waits 2 s after the start; no rate never waits."""
    p = Pacer(10, start=100.0)
    assert p.delay(5, now=100.0) == 0.0
    assert p.delay(15, now=100.1) == pytest.approx(0.4)
    assert p.delay(1, now=100.5) == pytest.approx(1.5)
    assert p.chunk(500) == 2
    assert Pacer(None, 0).delay(1000, now=0) == 0.0 and Pacer(None, 0).chunk(500) == 500
    assert Pacer(0.5, 0).chunk(500) == 1
