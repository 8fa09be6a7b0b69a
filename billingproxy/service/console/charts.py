"""Charts as server-side SVG.

Why SVG on the server: the pages stay one HTTP response with no JavaScript, so the
Content-Security-Policy can forbid scripts entirely (``script-src 'none'``); nothing is fetched
from a CDN; a chart is a few kilobytes of markup that renders in any browser, prints and
screenshots exactly; and it costs microseconds per chart (a 30-bar chart is ~60 elements).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 170
PAD_L, PAD_R, PAD_T, PAD_B = 64, 10, 12, 26


def _nice(value: float) -> float:
    """The smallest 1/2/2.5/5 times 10^k at or above ``value`` (the y axis maximum)."""
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent * (1 + 1e-12):
            return step * exponent
    return 10 * exponent


def _axis_format(top: float) -> Callable[[float], str]:
    """Enough decimals that the axis' quarter steps differ (steps of 0.00005 get 6)."""
    decimals = 0 if top >= 10 else max(0, 1 - math.floor(math.log10(top / 4)))
    return lambda v: f"{v:,.{min(decimals, 8)}f}"


def bar_chart(
    values: Sequence[float | Decimal | int | None],
    labels: Sequence[str],
    *,
    title: str,
    fmt: Callable[[float], str] | None = None,
    color: str = "#3566c9",
    label_every: int = 0,
) -> Markup:
    """Bars with a y axis (0 … a round maximum) and every n-th x label; None draws no bar."""
    numbers = [float(v) if v is not None else None for v in values]
    top = _nice(max([v for v in numbers if v is not None] or [0]))
    fmt = fmt or _axis_format(top)
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    n = max(len(numbers), 1)
    step = inner_w / n
    every = label_every or max(1, n // 8)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for i in range(5):
        y = PAD_T + inner_h - inner_h * i / 4
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{escape(fmt(top * i / 4))}</text>'
        )
    for i, (value, label) in enumerate(zip(numbers, labels, strict=False)):
        x = PAD_L + i * step
        if value is not None and value > 0:
            h = max(inner_h * value / top, 1.0)
            parts.append(
                f'<rect x="{x + step * 0.12:.1f}" y="{PAD_T + inner_h - h:.1f}" width="{step * 0.76:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{HEIGHT - 8}" class="axis" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
