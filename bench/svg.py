"""Curves as small standalone SVGs (no plotting library: a few lines and labels).

Both functions are pure: points in, document out.
- `latency_curve`: p50 and p99 against the rate; both axes logarithmic, so the flat part
  and the knee show at any scale.
- `scaling_curve`: throughput against worker processes, one line per kind of job, with the
  line perfect scaling from one worker would follow; workers on a log-2 axis, jobs/s linear
  from 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

_W, _H, _L, _R, _T, _B = 640, 400, 64, 24, 40, 56  # size and margins (left, right, top, bottom)


def _scale(lo: float, hi: float, a: float, b: float) -> tuple[float, float, float, float]:
    return math.log10(lo), math.log10(hi), a, b


def _at(v: float, axis: tuple[float, float, float, float]) -> float:
    lo, hi, a, b = axis
    return a + (math.log10(v) - lo) / (hi - lo) * (b - a)


def _ticks(lo: float, hi: float) -> list[float]:
    out: list[float] = []
    decade = 10 ** math.floor(math.log10(lo))
    while decade <= hi:
        out.extend(t for t in (decade, 2 * decade, 5 * decade) if lo <= t <= hi)
        decade *= 10
    return out


def latency_curve(title: str, points: Sequence[tuple[float, float, float]]) -> str:
    """`points`: (jobs/s, p50 ms, p99 ms), any order. Returns the SVG document."""
    pts = sorted(points)
    rates = [r for r, _, _ in pts]
    values = [v for _, a, b in pts for v in (a, b) if v > 0]
    x = _scale(min(rates) / 1.2, max(rates) * 1.2, _L, _W - _R)
    y = _scale(min(1.0, min(values)), max(100.0, max(values)) * 1.5, _H - _B, _T)
    out = _svg_open(title)
    for t in _ticks(10 ** x[0], 10 ** x[1]):
        px = _at(t, x)
        out.append(f'<line x1="{px:.1f}" y1="{_T}" x2="{px:.1f}" y2="{_H - _B}" stroke="#eee"/>')
        out.append(f'<text x="{px:.1f}" y="{_H - _B + 16}" text-anchor="middle">{t:g}</text>')
    for t in _ticks(10 ** y[0], 10 ** y[1]):
        py = _at(t, y)
        out.append(f'<line x1="{_L}" y1="{py:.1f}" x2="{_W - _R}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{_L - 6}" y="{py + 4:.1f}" text-anchor="end">{t:g}</text>')
    xlabel = "jobs/s (single POSTs, log scale)"
    out.append(f'<text x="{_W / 2}" y="{_H - 14}" text-anchor="middle">{xlabel}</text>')
    out.append(
        f'<text x="16" y="{_H / 2}" text-anchor="middle" transform="rotate(-90 16 {_H / 2})">'
        "POST to completed on the WebSocket, ms (log scale)</text>"
    )
    for i, (name, color) in enumerate((("p50", "#1f77b4"), ("p99", "#d62728"))):
        xy = [(_at(r, x), _at(max(v[i], 0.1), y)) for r, *v in pts]
        line = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in xy)
        out.append(f'<text x="{_L + 12}" y="{_T + 16 + 16 * i}" fill="{color}">{name}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _svg_open(title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
    ]


def scaling_curve(title: str, series: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    """`series`: per kind of job, (worker processes, jobs/s) points, any order. Dashed: each
    kind's one-worker rate times the workers (perfect scaling)."""
    workers = sorted({w for pts in series.values() for w, _ in pts})
    top = max(r * (max(workers) / w) for pts in series.values() for w, r in pts if w == min(workers))
    top = max([top] + [r for pts in series.values() for _, r in pts]) * 1.1
    x = _scale(min(workers) / 1.3, max(workers) * 1.3, _L + 16, _W - _R)

    def ly(v: float) -> float:
        return _H - _B - v / top * (_H - _B - _T)

    out = _svg_open(title)
    for w in workers:
        px = _at(w, x)
        out.append(f'<line x1="{px:.1f}" y1="{_T}" x2="{px:.1f}" y2="{_H - _B}" stroke="#eee"/>')
        out.append(f'<text x="{px:.1f}" y="{_H - _B + 16}" text-anchor="middle">{w}</text>')
    step = 10 ** math.floor(math.log10(top / 2))
    step *= 5 if top / step > 10 else (2 if top / step > 5 else 1)
    tick = 0.0
    while tick <= top:
        py = ly(tick)
        out.append(f'<line x1="{_L + 16}" y1="{py:.1f}" x2="{_W - _R}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{_L + 10}" y="{py + 4:.1f}" text-anchor="end">{tick:,.0f}</text>')
        tick += step
    out.append(f'<text x="{_W / 2}" y="{_H - 14}" text-anchor="middle">worker processes</text>')
    out.append(
        f'<text x="14" y="{_H / 2}" text-anchor="middle" transform="rotate(-90 14 {_H / 2})">'
        "jobs/s, end to end</text>"
    )
    for i, (name, pts) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        pts = sorted(pts)
        xy = [(_at(w, x), ly(r)) for w, r in pts]
        line = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in xy)
        w0, r0 = pts[0]
        ideal = " ".join(f"{_at(w, x):.1f},{ly(r0 * w / w0):.1f}" for w, _ in pts)
        out.append(f'<polyline points="{ideal}" fill="none" stroke="{color}" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{_L + 28}" y="{_T + 16 + 16 * i}" fill="{color}">{name}</text>')
    out.append(
        f'<text x="{_L + 28}" y="{_T + 16 + 16 * len(series)}" fill="#666">dashed: perfect scaling</text>'
    )
    out.append("</svg>\n")
    return "\n".join(out)


__all__ = ["latency_curve", "scaling_curve"]
