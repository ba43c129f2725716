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
    """`python -m bench` runs scenarios 1 to 10 in order (3 twice: one worker, then two)."""
    from bench.__main__ import STEPS

    assert [num for num, _ in STEPS] == ["1", "2", "3", "3", "4", "5", "6", "7", "8", "9", "10"]


def test_the_latency_curve_is_a_drawing_of_both_percentiles() -> None:
    """`bench.svg.latency_curve`: a standalone SVG with a p50 and a p99 line through every
    point, left to right by rate whatever order the points came in."""
    import xml.etree.ElementTree as ET

    from bench.svg import latency_curve

    points = [(500, 80.0, 300.0), (50, 15.0, 30.0), (2_000, 300.0, 9_000.0)]
    root = ET.fromstring(latency_curve("t", points))
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2 and len(root.findall(f"{ns}circle")) == 6
    for line in lines:
        xs = [float(p.split(",")[0]) for p in line.attrib["points"].split()]
        assert xs == sorted(xs) and len(xs) == 3
    p50, p99 = ([float(p.split(",")[1]) for p in line.attrib["points"].split()] for line in lines)
    assert all(a > b for a, b in zip(p50, p99, strict=True))  # p99 above p50: smaller y


def test_the_scaling_curve_draws_each_kind_and_its_perfect_line() -> None:
    """`bench.svg.scaling_curve`: per kind of job a line through its points left to right by
    workers (whatever order they came in), and a dashed line of perfect scaling from one
    worker, which rises in proportion to the workers."""
    import xml.etree.ElementTree as ET

    from bench.svg import scaling_curve

    series = {
        "no-op": [(4, 30_000.0), (1, 10_000.0), (2, 18_000.0)],
        "io": [(1, 1_500.0), (2, 3_000.0), (4, 5_000.0)],
    }
    root = ET.fromstring(scaling_curve("t", series))
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 4 and len(root.findall(f"{ns}circle")) == 6
    measured, ideal = lines[0], lines[1]
    assert "stroke-dasharray" in ideal.attrib and "stroke-dasharray" not in measured.attrib
    points = [tuple(map(float, p.split(","))) for p in ideal.attrib["points"].split()]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    assert xs == sorted(xs)
    base = ys[0]  # the SVG's y grows downwards; heights above the axis are proportional
    axis = max(float(t.attrib["y1"]) for t in root.findall(f"{ns}line"))
    assert [round((axis - y) / (axis - base), 3) for y in ys] == [1.0, 2.0, 4.0]
