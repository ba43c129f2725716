"""The layout rules of docs/ARCHITECTURE.md, checked on the source (pure: no I/O but reading it).

- Dependencies point one way: `schemas` imports nothing of ours; the shared runtime
  (`jobstream` outside `jobstream.cli`) imports only `schemas`; a service imports `schemas`
  and the shared runtime, and `producer` also the subsystems whose routers it mounts
  (`scheduler`, `deadletters`); only the command line (`jobstream.cli`) imports them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"producer", "scheduler", "deadletters", "consumer", "gateway"}
OURS = {"schemas", "jobstream", "bench", "tests"} | SERVICES
RUNTIME = {"schemas", "jobstream"}
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "jobstream": {"schemas"},
    "producer": RUNTIME | {"scheduler", "deadletters"},
    "scheduler": RUNTIME,
    "deadletters": RUNTIME,
    "consumer": RUNTIME,
    "gateway": RUNTIME,
    "jobstream.cli": OURS - {"bench", "tests"},
}

LONG = 320


def _modules() -> list[Path]:
    return sorted(p for pkg in ALLOWED if "." not in pkg for p in (ROOT / pkg).rglob("*.py"))


def _room(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return "jobstream.cli" if parts[:2] == ("jobstream", "cli") else parts[0]


def _imported(path: Path) -> set[str]:
    """The top-level names of our packages that `path` imports (`jobstream.cli` counted as
    its own room)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                cli = name == "jobstream.cli" or name.startswith("jobstream.cli.")
                found.add("jobstream.cli" if cli else top)
    return found


def test_dependencies_point_one_way() -> None:
    """No package imports one it may not (the table in docs/ARCHITECTURE.md)."""
    wrong = []
    for path in _modules():
        room = _room(path)
        for other in sorted(_imported(path) - ALLOWED[room] - {room}):
            wrong.append(f"{path.relative_to(ROOT)} ({room}) imports {other}")
    assert not wrong, "\n".join(wrong)


def test_long_modules_say_why() -> None:
    """A module over LONG lines explains at its top why it stays one module."""
    unexplained = []
    for path in _modules():
        text = path.read_text()
        if text.count("\n") > LONG and "Why one module:" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert not unexplained, "\n".join(unexplained)


def test_the_rule_sees_a_wrong_import(tmp_path: Path) -> None:
    """The import reader finds both import forms (so the rule above can fail)."""
    module = tmp_path / "m.py"
    module.write_text("import consumer.worker\nfrom gateway import hub\nfrom jobstream.cli import dev\n")
    assert _imported(module) == {"consumer", "gateway", "jobstream.cli"}
    module.write_text("from jobstream.client import Client\n")  # not the command line
    assert _imported(module) == {"jobstream"}
