"""Dead letters: what the pipeline gave up on, kept browsable and replayable.

This room owns the dead-letter index in Redis (`DlqStore`) and the indexer that keeps it
in step with the dead-letter topic (`DlqIndexer`), the query (filters, summaries), the
page cursor, the replay (`Replayer`, one `ReplayRun` per replay) and the HTTP router
(`GET /dlq`, `GET /dlq/{id}`, `POST /dlq/replay`, `GET /dlq/replays/{id}`). The API opens
the parts (`open_dead_letters()`) and mounts `router`; nothing here imports the API.
"""

from __future__ import annotations

from deadletters.index import DlqIndexer
from deadletters.query import ReplayRequest
from deadletters.replay import Replayer
from deadletters.routes import router
from deadletters.service import DeadLetters, open_dead_letters
from deadletters.store import DlqStore

__all__ = [
    "DeadLetters",
    "DlqIndexer",
    "DlqStore",
    "ReplayRequest",
    "Replayer",
    "open_dead_letters",
    "router",
]
