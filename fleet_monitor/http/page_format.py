"""How the status pages write figures: percents, instants, durations, the heartbeat bar's
buckets and the upload chart's geometry (Jinja filters and globals of the pages)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flask import Blueprint

from fleet_monitor.domain.badges import uptime_text
from fleet_monitor.domain.durations import format_duration
from fleet_monitor.domain.readmodels import UptimeBucket
from fleet_monitor.domain.timestamps import format_minute, format_rfc3339
from fleet_monitor.domain.uploads import UploadAggregate

BAR_SLOT = 3  # px a bucket takes in a heartbeat bar (2 drawn, 1 gap)
CHART_HEIGHT = 100  # px of the upload chart's plot


def percent(value: float | None) -> str:
    """An uptime as the badges write it (``99.79%``), an en dash without a value."""
    return "\N{EN DASH}" if value is None else uptime_text(value)


def instant(unix_ns: int | None) -> str:
    """An instant in RFC 3339, ``never`` without one."""
    return "never" if unix_ns is None else format_rfc3339(unix_ns)


def age(unix_ns: int | None, now_ns: int) -> str:
    """How long before ``now_ns`` an instant was, roughly (``12 s ago``, ``5 min ago``,
    ``3 h ago``, ``2 d ago``; ``in 4 s`` ahead of it), ``never`` without one."""
    if unix_ns is None:
        return "never"
    seconds = (now_ns - unix_ns) // 10**9
    ahead, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{seconds // size} {unit}"
            break
    else:
        text = f"{seconds} s"
    return f"in {text}" if ahead else f"{text} ago"


def duration(nanoseconds: int | None) -> str:
    """A duration as Go writes it, an en dash without one."""
    return "\N{EN DASH}" if nanoseconds is None else format_duration(nanoseconds)


def bucket_class(bucket: UptimeBucket) -> str:
    """A bar bucket's CSS class: ``n`` outside the device's span, ``u`` every minute with a
    heartbeat, ``d`` none, ``p`` some."""
    if not bucket.minutes:
        return "n"
    if bucket.minutes_with_heartbeat == bucket.minutes:
        return "u"
    return "d" if not bucket.minutes_with_heartbeat else "p"


def bar_text(bar: Sequence[UptimeBucket], step: str) -> str:
    """The bar in words (its text alternative)."""
    classes = [bucket_class(bucket) for bucket in bar]
    return (
        f"last {len(bar)} steps of {step}: {classes.count('u')} with every minute, "
        f"{classes.count('p')} with some, {classes.count('d')} with none, "
        f"{classes.count('n')} outside its history"
    )


@dataclass(frozen=True)
class UploadChart:
    """The upload chart: per bucket with uploads its x, and the y of its min, mean and max
    (0 at the top, :data:`CHART_HEIGHT` at the bottom), scaled to ``top_ns``."""

    points: list[tuple[int, float, float, float]]
    top_ns: int

    @property
    def mean_line(self) -> str:
        """The means as an SVG polyline's points."""
        return " ".join(f"{x},{mean:.1f}" for x, _, mean, _ in self.points)


def upload_chart(uploads: Sequence[tuple[int, UploadAggregate]]) -> UploadChart:
    """The chart of ``uploads`` (one bucket a :data:`BAR_SLOT`)."""
    top = max((a.max_ns or 0 for _, a in uploads), default=0) or 1

    def y(ns: int) -> float:
        return CHART_HEIGHT * (1 - ns / top)

    points = [
        (n * BAR_SLOT + 1, y(a.min_ns or 0), y(a.avg_ns or 0), y(a.max_ns or 0))
        for n, (_, a) in enumerate(uploads)
        if a.count
    ]
    return UploadChart(points, top)


def install_filters(blueprint: Blueprint) -> None:
    """Give the pages' templates these filters and globals."""
    for function in (percent, instant, age, duration, bucket_class, bar_text):
        blueprint.add_app_template_filter(function)
    blueprint.add_app_template_filter(format_minute, "minute")
    blueprint.app_context_processor(
        lambda: {"upload_chart": upload_chart, "bar_slot": BAR_SLOT, "chart_height": CHART_HEIGHT}
    )
