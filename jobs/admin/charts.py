"""
Charts for the dashboard, drawn on the server as inline SVG.

No script and no chart library: the page works offline, behind any content
security policy, and renders at once after each refresh.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ..metrics import Minute


@dataclass(frozen=True)
class Segment:
    """One coloured part of a bar: its CSS class, value and tooltip."""

    css_class: str
    value: float
    title: str


def _svg(width: int, height: int, label: str, body: list[str]) -> SafeString:
    # Every text in body went through escape().
    return mark_safe(
        f'<svg class="jobs-chart" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>{"".join(body)}</svg>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", css_class: str = "axis") -> str:
    return (
        f'<text class="{css_class}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">'
        f"{escape(text)}</text>"
    )


def throughput_chart(minutes: Sequence[Minute]) -> SafeString:
    """Stacked bars per minute: successful, failed and cancelled jobs of the last hour."""
    width, height, left, top, bottom = 720, 190, 40, 10, 24
    plot_height = height - top - bottom
    peak = max((m.successful + m.failed + m.cancelled for m in minutes), default=0)
    scale = plot_height / peak if peak else 0.0
    slot = (width - left) / max(len(minutes), 1)
    body = [
        f'<line class="grid" x1="{left}" y1="{top}" x2="{width}" y2="{top}"/>',
        f'<line class="grid" x1="{left}" y1="{top + plot_height}" '
        f'x2="{width}" y2="{top + plot_height}"/>',
        _text(left - 4, top + 10, str(peak), "end"),
        _text(left - 4, top + plot_height, "0", "end"),
    ]
    for index, minute in enumerate(minutes):
        x = left + index * slot + 1
        y = top + plot_height
        parts = [
            ("bar successful", minute.successful),
            ("bar failed", minute.failed),
            ("bar cancelled", minute.cancelled),
        ]
        title = (
            f"{minute.start:%H:%M}: {minute.successful} successful, "
            f"{minute.failed} failed, {minute.cancelled} cancelled"
        )
        body.append(f"<g><title>{escape(title)}</title>")
        for css_class, value in parts:
            if value:
                bar = value * scale
                y -= bar
                body.append(
                    f'<rect class="{css_class}" x="{x:.1f}" y="{y:.1f}" '
                    f'width="{slot - 2:.1f}" height="{bar:.1f}"/>'
                )
        body.append("</g>")
    body += _minute_ticks(minutes, left, slot, top + plot_height, height - 6)
    return _svg(width, height, "Jobs finished per minute, last hour", body)


# Minutes between the labelled ticks under the per-minute chart.
TICK_MINUTES = 10


def _minute_ticks(
    minutes: Sequence[Minute], left: float, slot: float, axis: float, baseline: float
) -> list[str]:
    """A tick and its time under every TICK_MINUTES-th minute's bar."""
    ticks = []
    for index, minute in enumerate(minutes):
        if minute.start.minute % TICK_MINUTES:
            continue
        x = left + (index + 0.5) * slot
        ticks.append(f'<line class="grid" x1="{x:.1f}" y1="{axis}" x2="{x:.1f}" y2="{axis + 4}"/>')
        ticks.append(_text(x, baseline, f"{minute.start:%H:%M}", "middle"))
    return ticks


def bar_chart(
    label: str, rows: Sequence[tuple[str, Sequence[Segment]]], unit: str = ""
) -> SafeString:
    """Horizontal bars, one per row, each stacked from its segments."""
    width, row_height, left, right = 720, 26, 130, 90
    height = max(len(rows), 1) * row_height + 4
    peak = max((sum(s.value for s in segments) for _, segments in rows), default=0)
    scale = (width - left - right) / peak if peak else 0.0
    body = []
    for index, (row_label, segments) in enumerate(rows):
        y = 2 + index * row_height
        x = float(left)
        body.append(_text(left - 6, y + 17, row_label, "end", "label"))
        for segment in segments:
            if segment.value:
                bar = max(segment.value * scale, 1.0)
                body.append(
                    f'<rect class="bar {segment.css_class}" x="{x:.1f}" y="{y + 3}" '
                    f'width="{bar:.1f}" height="{row_height - 6}">'
                    f"<title>{escape(segment.title)}</title></rect>"
                )
                x += bar
        total = sum(s.value for s in segments)
        text = _format(total, unit) if total or unit != "s" else "—"
        body.append(_text(x + 6, y + 17, text, "start", "value"))
    return _svg(width, height, label, body)


def _format(value: float, unit: str) -> str:
    if unit == "s":
        return duration_text(value)
    return f"{value:,.0f}"


def duration_text(seconds: float | None) -> str:
    """A duration as an operator reads it: 85 ms, 4.2 s, 3 min 20 s, 2 h 5 min."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
