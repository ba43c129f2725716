"""A latency curve as a small standalone SVG (no plotting library: a few lines and labels).

`latency_curve` is pure: points in, document out. Both axes are logarithmic, so the flat part
and the knee show at any scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
    ]
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


__all__ = ["latency_curve"]
