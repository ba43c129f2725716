"""Access control: API keys with scopes and job-type patterns (`keys`), where they are kept
and checked (`ring`), and how HTTP requests are admitted (`http`); the gateway admits
WebSocket connections with the same pieces (`gateway.session`).

Off by default (`JOBSTREAM_AUTH=off`): everything is open, and the services then refuse to
listen on anything but loopback unless `JOBSTREAM_INSECURE=true`. `JOBSTREAM_AUTH=required`
turns it on for the API and the gateway alike.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobstream.settings import ServerSettings

log = logging.getLogger("jobstream.access")


def announce(settings: ServerSettings, service: str) -> None:
    """Say at start whether keys are required: loudly when they are not."""
    if settings.auth == "off":
        log.warning(
            "ACCESS IS OPEN: the %s at %s:%d takes no API key (JOBSTREAM_AUTH=off): anyone who reaches it "
            "may submit, cancel and read every job. Require keys with JOBSTREAM_AUTH=required "
            "(make one with `jobstream keys create`)",
            service,
            settings.host,
            settings.port,
        )
    else:
        log.info(
            "the %s requires API keys (%d in the settings, the rest in Redis)",
            service,
            len(settings.api_keys),
        )
