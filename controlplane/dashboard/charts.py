"""Server-side SVG charts (pure): a line chart per figure and sparklines.

No chart library and no script: the SVG is a few paths drawn in a fixed viewBox and
stretched to the card's width (`preserveAspectRatio="none"`, strokes that do not
scale), so it reads the same at 1280 and 390 px; labels are HTML around it. Colours
come from CSS classes (controlplane/static/metrics.css), light and dark. Every chart
carries its numbers as a visually hidden table (screen readers, and the tests read
it); a missing bucket breaks the line (a gap is not a zero).
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

W, H = 600.0, 160.0  # the viewBox; CSS sets the rendered size


@dataclass(frozen=True)
class Line:
    key: str  # field of a series point
    label: str
    tone: str  # CSS class suffix: a, b, bad


def _scale_max(values: list[float]) -> float:
    """A round upper bound for the axis (1, 2, 2.5 or 5 times a power of ten), with 10%
    headroom so the highest line does not run along the chart's top edge."""
    top = max(values, default=0.0) * 1.1
    if top <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(top))
    return next(n * magnitude for n in (1, 2, 2.5, 5, 10) if top <= n * magnitude)


def _paths(
    points: list[dict[str, Any]], key: str, t_from: int, t_to: int, step: int, top: float
) -> str:
    """One SVG path drawn as steps (each bucket a level across its width, so a lone
    point shows); a missing bucket starts a new segment."""
    span = max(1, t_to - t_from)
    parts, prev_t = [], None
    for p in points:
        v = p.get(key)
        if v is None:
            prev_t = None
            continue
        x0 = max(0.0, (p["t"] - t_from) / span * W)
        x1 = min(W, (p["t"] + step - t_from) / span * W)
        y = H - min(float(v), top) / top * H
        joined = prev_t is not None and p["t"] - prev_t <= step
        parts.append(f"{'L' if joined else 'M'}{x0:.1f},{y:.1f} L{x1:.1f},{y:.1f}")
        prev_t = p["t"]
    return " ".join(parts)


def _latest_dot(
    points: list[dict[str, Any]], key: str, t_from: int, t_to: int, step: int, top: float
) -> str:
    """A round marker on the newest point: a lone bucket of a long range is only a few
    pixels wide, and the newest value is the one people look for."""
    newest = next((p for p in reversed(points) if p.get(key) is not None), None)
    if newest is None:
        return ""
    span = max(1, t_to - t_from)
    x = min(W, max(0.0, (newest["t"] + step / 2 - t_from) / span * W))
    y = H - min(float(newest[key]), top) / top * H
    return f"M{x:.1f},{y:.1f} l0,0"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "bytes":
        for suffix, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def line_chart(
    chart_id: str,
    title: str,
    unit: str,
    lines: list[Line],
    points: list[dict[str, Any]],
    t_from: int,
    t_to: int,
    step: int,
) -> Markup:
    values = [float(p[ln.key]) for p in points for ln in lines if p.get(ln.key) is not None]
    top = _scale_max(values)
    latest = {
        ln.key: next((p[ln.key] for p in reversed(points) if p.get(ln.key) is not None), None)
        for ln in lines
    }
    legend = " ".join(
        f'<span class="legend legend-{ln.tone}">{escape(ln.label)} '
        f'<strong data-latest="{escape(ln.key)}">{escape(fmt(latest[ln.key], unit))}</strong></span>'
        for ln in lines
    )
    grid = "".join(
        f'<line class="chart-grid" x1="0" x2="{W:g}" y1="{H * f:.1f}" y2="{H * f:.1f}" '
        'vector-effect="non-scaling-stroke"/>'
        for f in (0.25, 0.5, 0.75)
    )
    paths = "".join(
        f'<path class="chart-line chart-{ln.tone}" data-series="{escape(ln.key)}" '
        f'd="{_paths(points, ln.key, t_from, t_to, step, top)}" fill="none" '
        'vector-effect="non-scaling-stroke"/>'
        f'<path class="chart-dot chart-{ln.tone}" '
        f'd="{_latest_dot(points, ln.key, t_from, t_to, step, top)}" '
        'vector-effect="non-scaling-stroke"/>'
        for ln in lines
    )
    head = "".join(f'<th scope="col">{escape(ln.label)}</th>' for ln in lines)
    rows = "".join(
        f'<tr data-t="{p["t"]}" data-requests="{p.get("requests", "")}">'
        f'<th scope="row">{clock(p["t"])}</th>'
        + "".join(
            f'<td data-key="{escape(ln.key)}" data-value="{p.get(ln.key) if p.get(ln.key) is not None else ""}">'
            f"{escape(fmt(p.get(ln.key), unit))}</td>"
            for ln in lines
        )
        + "</tr>"
        for p in points
    )
    empty = "" if points else '<p class="chart-empty muted">No data in this range yet.</p>'
    return Markup(
        f'<figure class="chart" id="{escape(chart_id)}" data-points="{len(points)}">'
        f'<figcaption><span class="chart-title">{escape(title)}</span> {legend}</figcaption>'
        f'<div class="chart-box"><span class="chart-max">{escape(fmt(top, unit))}</span>'
        f'<svg viewBox="0 0 {W:g} {H:g}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(title)}" focusable="false">{grid}{paths}</svg></div>'
        f'<div class="chart-axis muted"><span>{clock(t_from)}</span><span>{clock(t_to)}</span></div>'
        f"{empty}"
        f'<table class="visually-hidden"><caption>{escape(title)}</caption>'
        f'<thead><tr><th scope="col">time (UTC)</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
        "</figure>"
    )


def sparkline(
    label: str, points: list[dict[str, Any]], key: str, t_from: int, t_to: int, step: int
) -> Markup:
    values = [float(p[key]) for p in points if p.get(key) is not None]
    top = _scale_max(values)
    latest = values[-1] if values else None
    d = _paths(points, key, t_from, t_to, step, top)
    text = f"{label}: {fmt(latest, '')} now" if latest is not None else f"{label}: no data"
    return Markup(
        f'<svg class="sparkline" viewBox="0 0 {W:g} {H:g}" preserveAspectRatio="none" '
        f'role="img" aria-label="{escape(text)}" data-latest="{latest if latest is not None else ""}">'
        f'<path class="chart-line chart-a" d="{d}" fill="none" vector-effect="non-scaling-stroke"/>'
        f'<path class="chart-dot chart-a" d="{_latest_dot(points, key, t_from, t_to, step, top)}" '
        'vector-effect="non-scaling-stroke"/>'
        "</svg>"
    )


def clock(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%d %b %H:%M")
