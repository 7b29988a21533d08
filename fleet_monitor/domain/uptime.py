"""The SPEC's uptime of a device, from its distinct heartbeat minutes and their span."""

from __future__ import annotations


def uptime_percent(minutes_seen: int, first: int | None, last: int | None) -> float:
    """No minutes: 0.0. One minute (or all in one): 100.0. Otherwise
    ``min(100, 100 * minutes_seen / (last - first))``, unrounded."""
    if minutes_seen == 0 or first is None or last is None:
        return 0.0
    if last == first:
        return 100.0
    return min(100.0, 100 * minutes_seen / (last - first))


def sla_uptime_percent(
    minutes_seen: int, first: int | None, last: int | None, excluded: int, excluded_seen: int
) -> float:
    """The SPEC's uptime with ``excluded`` minutes of the span (maintenance; ``excluded_seen``
    of them had a heartbeat) left out of both sides: 0.0 without minutes, 100.0 when nothing
    of the span is left."""
    if minutes_seen == 0 or first is None or last is None:
        return 0.0
    span = last - first - excluded
    if span <= 0:
        return 100.0
    return min(100.0, 100 * (minutes_seen - excluded_seen) / span)
