"""Browsers on other sites: the allow-list (pure), and the API refusing or allowing them
against the real broker and Redis."""

from __future__ import annotations

import pytest

from jobstream.origins import AllowedOrigins
from jobstream.settings import ApiSettings, Settings
from producer import create_app
from tests.helpers import asgi_client

EVIL = "http://evil.example"
FRIEND = "https://app.example:8443"


def test_allow_list_decides_by_origin_and_host() -> None:
    """No Origin (not a browser) and the server's own host pass; others only when listed."""
    allowed = AllowedOrigins.parse(f"{FRIEND}, http://Other.example/")
    assert allowed.allows(None, "api:8000")
    assert allowed.allows("http://api:8000", "api:8000")  # same origin
    assert allowed.allows("https://API:8000", "api:8000")  # same host behind a TLS proxy
    assert allowed.allows(FRIEND, "api:8000") and allowed.allows("http://other.example", "api")
    assert not allowed.allows(EVIL, "api:8000")
    assert not allowed.allows("null", "api:8000")  # sandboxed frames, file:// pages
    assert not allowed.allows("http://api:8001", "api:8000")  # another port is another origin
    assert not AllowedOrigins.parse("").allows(EVIL, None)
    assert AllowedOrigins.parse("*").allows(EVIL, "api")


@pytest.mark.parametrize("bad", ["evil.example", "http://a.example/path", "ftp://a.example", "http://"])
def test_allow_list_refuses_what_is_not_an_origin(bad: str) -> None:
    """A setting entry that is not scheme://host[:port] is a settings error naming it."""
    with pytest.raises(ValueError, match="cors_origins"):
        Settings(cors_origins=bad)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/jobs", b'{"type": "t"}'), ("POST", "/jobs/batch", b'{"jobs": [{"type": "t"}]}'),
     ("POST", "/dlq/replay", b"{}"), ("DELETE", "/jobs/x", b""), ("GET", "/jobs/x", b"")],
)  # fmt: skip
async def test_cross_origin_request_is_403(settings: Settings, method: str, path: str, body: bytes) -> None:
    """A request from a page on another site is refused with 403 JSON naming the origin and the
    setting, before anything is done; the same request without Origin, or from the API's own
    origin, goes through."""
    app = create_app(ApiSettings(**settings.model_dump()))
    async with asgi_client(app, base_url="http://api") as http:
        headers = {"content-type": "application/json", "origin": EVIL}
        r = await http.request(method, path, content=body, headers=headers)
        assert r.status_code == 403, r.text
        assert EVIL in r.json()["detail"] and "JOBSTREAM_CORS_ORIGINS" in r.json()["detail"]
        assert "access-control-allow-origin" not in r.headers
        for origin in ({}, {"origin": "http://api"}):
            r = await http.request(
                method, path, content=body, headers={"content-type": "application/json", **origin}
            )
            assert r.status_code != 403, r.text


async def test_allowed_origin_gets_cors_headers(settings: Settings) -> None:
    """An origin in JOBSTREAM_CORS_ORIGINS passes its preflight and may submit; the answer
    carries Access-Control-Allow-Origin; a preflight from elsewhere is 403."""
    app = create_app(ApiSettings(**{**settings.model_dump(), "cors_origins": FRIEND}))
    async with asgi_client(app, base_url="http://api") as http:
        preflight = {"origin": FRIEND, "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type, idempotency-key"}  # fmt: skip
        r = await http.options("/jobs", headers=preflight)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == FRIEND
        assert "POST" in r.headers["access-control-allow-methods"]
        r = await http.post("/jobs", json={"type": "t"}, headers={"origin": FRIEND})
        assert r.status_code == 202, r.text
        assert r.headers["access-control-allow-origin"] == FRIEND
        r = await http.options("/jobs", headers={**preflight, "origin": EVIL})
        assert r.status_code == 403
