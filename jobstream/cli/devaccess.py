"""What `make run` (`jobstream dev`) sets up for access: the dashboard's addresses, and
with `JOBSTREAM_AUTH=required` a development key (every scope) kept in the data folder,
printed in the banner with how to use it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jobstream.access.keys import SCOPES, KeyRecord, hash_secret, new_key, split_key


def dev_key(data_dir: Path) -> tuple[str, KeyRecord]:
    """The development key of `JOBSTREAM_AUTH=required make run` (every scope), made once
    and kept in the data folder."""
    path = data_dir / "dev-api-key"
    name = "make run development key"
    if path.exists():
        kept = path.read_text().strip()
        if (parts := split_key(kept)) is not None:
            key_id, secret = parts
            return kept, KeyRecord(key_id, hash_secret(secret), SCOPES, (), name)
    key, record = new_key(SCOPES, (), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key, record


def access_env(data_dir: Path, api_port: int, gateway_port: int) -> dict[str, str]:
    """What the services need besides their addresses: the dashboard's API address and, on
    the API, its origin (the page is the gateway's); with keys required, JOBSTREAM_API_KEYS
    with the configured keys and the development key."""
    api, gateway = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gateway_port}"
    origins = [o for o in os.environ.get("JOBSTREAM_CORS_ORIGINS", "").split(",") if o.strip()]
    env = {"JOBSTREAM_DASHBOARD_API_URL": api, "JOBSTREAM_CORS_ORIGINS": ",".join([*origins, gateway])}
    if keys_required():
        env["JOBSTREAM_API_KEYS"] = json.dumps([*configured_keys(), dev_key(data_dir)[1].as_dict()])
    return env


def configured_keys() -> list[Any]:
    """The records already in this environment's JOBSTREAM_API_KEYS (kept beside the
    development key; a value that does not parse is left for the services to refuse)."""
    try:
        keys = json.loads(os.environ.get("JOBSTREAM_API_KEYS") or "[]")
    except ValueError:
        return []
    return keys if isinstance(keys, list) else []


def keys_required() -> bool:
    return os.environ.get("JOBSTREAM_AUTH", "off") == "required"


def access_lines(data_dir: Path, api: str, body: str) -> list[str]:
    """`make run`'s banner lines on access, and how to try a submit."""
    where = data_dir / "dev-api-key"
    if not keys_required():
        return [
            "  Access      open: no API key needed, on 127.0.0.1 only. To require keys:",
            f"              JOBSTREAM_AUTH=required make run   (a development key is then kept in {where})",
            "Try:",
            f"  curl -s -X POST {api}/jobs -H 'content-type: application/json' -d '{body}'",
        ]
    key = dev_key(data_dir)[0]
    return [
        f"  Access      API keys required; the development key (every scope): {key}",
        f"              (kept in {where}; more with `jobstream keys create`)",
        "Try:",
        f"  curl -s -X POST {api}/jobs -H 'authorization: Bearer {key}' "
        f"-H 'content-type: application/json' -d '{body}'",
        f"  export JOBSTREAM_API_KEY={key}   (for the jobstream commands below)",
    ]
