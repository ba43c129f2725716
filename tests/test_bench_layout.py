"""The benchmarks live in `bench/`, outside the installed package, one module a scenario."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib

from tests.conftest import ROOT


def test_the_wheel_does_not_carry_the_benchmarks() -> None:
    """No pattern of pyproject's `packages.find.include` matches `bench` or its modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include: list[str] = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for name in ("bench", "bench.harness", "bench.load"):
        assert not any(fnmatch.fnmatchcase(name, pattern) for pattern in include), name
    assert any(fnmatch.fnmatchcase("jobstream.cli", pattern) for pattern in include)


def test_the_installed_cli_neither_offers_nor_imports_the_benchmarks() -> None:
    """`jobstream` has no `bench` subcommand, and building its parser imports nothing of `bench`."""
    code = "from jobstream.cli import build_parser\nbuild_parser().parse_args(['bench'])\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'bench'" in done.stderr
    code = (
        "import sys\n"
        "from jobstream.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_scenario_has_a_step_in_order() -> None:
    """`python -m bench` runs scenarios 1 to 6 in order (3 twice: one worker, then two)."""
    from bench.__main__ import STEPS

    assert [num for num, _ in STEPS] == ["1", "2", "3", "3", "4", "5", "6"]
