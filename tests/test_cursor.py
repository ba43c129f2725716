"""The one cursor codec (pure): its envelope, its errors, and the cursors clients already hold."""

from __future__ import annotations

import pytest

from deadletters.cursor import Position
from deadletters.cursor import decode_cursor as decode_page
from gateway.cursor import decode_cursor as decode_resume
from jobstream.cursor import CursorError, CursorFormat

FORMAT = CursorFormat(max_chars=16, found_in="a reply's 'cursor'", resend="send one you were given")


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\xff" * 11, "12:ünï".encode()])
def test_envelope_round_trips_url_safe(payload: bytes) -> None:
    """decode(encode(b)) == b, and a cursor is the version then only URL-safe characters."""
    text = FORMAT.encode(payload)
    assert FORMAT.decode(text) == payload
    assert text[0] == "1" and all(c.isascii() and (c.isalnum() or c in "-_") for c in text[1:])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must be a non-empty string taken from a reply's 'cursor'"),
        ("1" + "A" * 16, "is longer than 16 characters"),
        ("2AAAA", "has an unknown version; send one you were given"),
        ("1!!!", "is not valid base64url"),
        ("1AQA=", "is not valid base64url"),  # padding is never written
        ("1AB", "is not valid base64url"),  # non-canonical trailing bits
    ],
)
def test_envelope_errors_say_why(text: str, reason: str) -> None:
    """Each refusal is one CursorError (a ValueError, code bad_cursor) with its reason."""
    with pytest.raises(CursorError) as caught:
        FORMAT.decode(text)
    assert isinstance(caught.value, ValueError) and caught.value.code == "bad_cursor"
    assert caught.value.reason == reason and str(caught.value) == f"cursor {reason}"


def test_cursors_clients_hold_still_decode() -> None:
    """Cursors written before the codec was shared decode to the same positions."""
    assert decode_resume("1AA") == {}
    assert decode_resume("1AwAFAAAAgICAgIAg") == {0: 5, 1: 0, 2: 1 << 40}
    assert decode_resume("1AgMHgAf__________38") == {3: 7, 900: (1 << 63) - 1}
    assert decode_page("1NTrDvG7Drzpjw7Zkw6k") == Position(5, "ünï:cödé")
    assert decode_page("1MTc2NDI3NTUyMDEyMzowMTk2ZjFjMi03YTNiLTdjMDAtODAwMC0wMDAwMDAwMDAwMDA") == Position(
        1_764_275_520_123, "0196f1c2-7a3b-7c00-8000-000000000000"
    )


def test_each_cursor_keeps_its_messages() -> None:
    """The gateway and the dead-letter API word their refusals as before, naming their source."""
    with pytest.raises(CursorError) as caught:
        decode_resume("2AQA")
    assert str(caught.value) == "cursor has an unknown version; send a cursor this gateway sent you"
    with pytest.raises(CursorError) as caught:
        decode_resume("1AQ")
    assert str(caught.value) == "cursor is truncated"
    with pytest.raises(CursorError) as caught:
        decode_page("")
    assert caught.value.reason == "must be a non-empty string taken from a page's 'next_cursor'"
    with pytest.raises(CursorError) as caught:
        decode_page("1MTI")
    assert caught.value.reason == "is not a cursor this API wrote"
