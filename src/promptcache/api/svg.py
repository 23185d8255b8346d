"""Small server-drawn SVG charts for the cache page: bars and a line over labelled points.

No JavaScript and nothing fetched at run time: each chart is a self-contained `<svg>`."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 16, 40


def _x(i: int, n: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + span * (i + 0.5) / max(n, 1)


def _y(value: float, top: float) -> float:
    span = HEIGHT - TOP - BOTTOM
    return TOP + span * (1 - (value / top if top else 0.0))


def _frame(title: str, labels: list[str], top: float, unit: str, body: str) -> str:
    ticks = []
    for frac in (0.0, 0.5, 1.0):
        y = _y(top * frac, top)
        value = f"{top * frac:.0%}" if unit == "%" else f"{top * frac:,.0f}"
        ticks.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>'
        )
    step = max(1, len(labels) // 6)
    names = [
        f'<text x="{_x(i, len(labels)):.1f}" y="{HEIGHT - BOTTOM + 16}" '
        f'text-anchor="middle">{escape(label[-5:])}</text>'
        for i, label in enumerate(labels)
        if i % step == 0
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" class="chart">'
        f"<title>{escape(title)}</title>{''.join(ticks)}{''.join(names)}{body}</svg>"
    )


def bar_chart(title: str, labels: list[str], totals: list[int], parts: list[int]) -> str:
    """Bars of `totals` per label, with `parts` (a subset, e.g. cached of prompt) inside."""
    top = float(max(totals, default=0)) or 1.0
    width = (WIDTH - LEFT - RIGHT) / max(len(labels), 1) * 0.7
    bars = []
    for i, (label, total, part) in enumerate(zip(labels, totals, parts, strict=True)):
        x = _x(i, len(labels)) - width / 2
        for value, cls in ((total, "total"), (part, "part")):
            y = _y(value, top)
            bars.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                f'height="{HEIGHT - BOTTOM - y:.1f}" class="{cls}">'
                f"<title>{escape(label)}: {value:,}</title></rect>"
            )
    return _frame(title, labels, top, "", "".join(bars))


def line_chart(title: str, labels: list[str], values: list[float]) -> str:
    """A line of fractions (0..1) per label, with a dot at each point."""
    points = [(_x(i, len(labels)), _y(v, 1.0)) for i, v in enumerate(values)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" class="dot">'
        f"<title>{escape(label)}: {v:.1%}</title></circle>"
        for (x, y), label, v in zip(points, labels, values, strict=True)
    )
    line = f'<polyline points="{path}" class="line"/>' if points else ""
    return _frame(title, labels, 1.0, "%", line + dots)
