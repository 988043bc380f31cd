"""Bar-chart geometry for server-rendered SVG: the page needs no JavaScript to draw it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Bar:
    """One bar, in SVG user units, with the text a pointer or a screen reader gets."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Label:
    """A piece of axis text and where it goes."""

    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    """Everything the SVG template draws: plot box, bars, gridlines and axis labels."""

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    bars: tuple[Bar, ...]
    grid: tuple[Label, ...]  # y of each gridline and its value label
    x_labels: tuple[Label, ...]
    empty: bool
    summary: str


def nice_step(maximum: float, ticks: int = 4) -> float:
    """A round gridline step (1, 2 or 5 times a power of ten) giving about `ticks` lines."""
    if maximum <= 0:
        return 1.0
    raw = maximum / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def bar_chart(points: Sequence[tuple[str, float | int | Decimal]], *,
              fmt: Callable[[float], str], title: str, width: int = 720, height: int = 220,
              label_every: int = 5) -> Chart:
    """Lay out one bar per (label, value), with value gridlines formatted by `fmt`."""
    left, right, top, bottom = 64.0, width - 12.0, 12.0, height - 28.0
    values = [float(v) for _, v in points]
    peak = max(values, default=0.0)
    step = nice_step(peak)
    ceiling = step * max(1, math.ceil(peak / step)) if peak > 0 else step * 4
    plot_h = bottom - top
    slot = (right - left) / max(1, len(points))
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, ((label, _), value) in enumerate(zip(points, values, strict=True)):
        h = plot_h * value / ceiling if ceiling else 0.0
        if value > 0:
            h = max(h, 1.5)  # a tiny day still shows
        bars.append(Bar(x=round(left + index * slot + gap / 2, 2), y=round(bottom - h, 2),
                        width=round(slot - gap, 2), height=round(h, 2),
                        title=f"{label}: {fmt(value)}"))
    grid = []
    lines = round(ceiling / step)
    for i in range(lines + 1):
        value = step * i
        grid.append(Label(x=left - 6, y=round(bottom - plot_h * value / ceiling, 2),
                          text=fmt(value)))
    x_labels = []
    for index, (label, _) in enumerate(points):
        if index % label_every == 0 or index == len(points) - 1:
            x_labels.append(Label(x=round(left + index * slot + slot / 2, 2), y=height - 8,
                                  text=label))
    total = sum(values)
    summary = f"{title}: {len(points)} days, total {fmt(total)}, highest {fmt(peak)}"
    return Chart(width=width, height=height, left=left, top=top, right=right, bottom=bottom,
                 bars=tuple(bars), grid=tuple(grid), x_labels=tuple(x_labels),
                 empty=peak <= 0, summary=summary)
