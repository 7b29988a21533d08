"""Uptime badges: a device's or the fleet's uptime over a window, its colour by threshold, and
the geometry of a shields-style badge (label on grey, message on the colour).

The windows are those of ``group_by`` (each ends at the current minute, not counted, and is
counted from each device's first heartbeat) and ``all``: the SPEC's uptime of a device, the
mean of the devices' (as ``GET /fleet``'s ``avg_uptime``) for the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_monitor.domain.groups import group_summaries
from fleet_monitor.domain.readmodels import Expectations, FleetReads, fleet_summary
from fleet_monitor.domain.statuspage import UPTIME_WINDOWS, window_uptimes

BADGE_WINDOWS = UPTIME_WINDOWS
# (lowest percent, colour), best first: shields.io's palette
THRESHOLDS = (
    (99.9, "#4c1"),
    (99.0, "#97ca00"),
    (97.0, "#a4a61d"),
    (95.0, "#dfb317"),
    (90.0, "#fe7d37"),
    (0.0, "#e05d44"),
)
NO_DATA = "#9f9f9f"
FLEET_KEY = ""  # a label key no device has: grouping by it puts the whole fleet in one group


def device_uptime(store: FleetReads, device_id: str, now_ns: int, window: str) -> float | None:
    """The device's uptime (percent) over ``window`` (see :func:`window_uptimes`); raises
    UnknownDeviceError."""
    return window_uptimes(store, store.snapshot(device_id), now_ns)[window]


def fleet_uptime(
    store: FleetReads,
    now_ns: int,
    expectations: Expectations,
    window: str,
    selector: tuple[tuple[str, str], ...] = (),
) -> float | None:
    """The fleet's (or the devices of ``selector``'s) uptime over ``window``: the share of
    their watched minutes with a heartbeat, or for ``all`` the mean of their uptimes; None
    without a heartbeat."""
    if window == "all":
        summary = fleet_summary(store, now_ns, expectations, selector)
        return summary.avg_uptime if summary.never_seen < summary.devices else None
    groups = group_summaries(store, now_ns, expectations, FLEET_KEY, selector)
    return groups[0].uptime(window) if groups else None


def colour_of(percent: float | None) -> str:
    """The badge colour of an uptime: the first threshold it reaches, grey without one."""
    if percent is None:
        return NO_DATA
    return next(colour for lowest, colour in THRESHOLDS if percent >= lowest)


def uptime_text(percent: float | None) -> str:
    """An uptime as badges and pages show it: rounded to two decimals, but never up to 100
    (99.999 is ``99.99%``), ``no data`` without one."""
    if percent is None:
        return "no data"
    if percent >= 100:
        return "100%"
    return f"{min(round(percent, 2), 99.99):.2f}%"


@dataclass(frozen=True)
class Badge:
    """A two-part badge; widths in pixels, from an estimate of Verdana 11 px."""

    label: str
    message: str
    colour: str

    @property
    def label_width(self) -> int:
        """The label's part, with 6 px of padding each side."""
        return text_width(self.label) + 12

    @property
    def message_width(self) -> int:
        """The message's part."""
        return text_width(self.message) + 12

    @property
    def width(self) -> int:
        """The whole badge."""
        return self.label_width + self.message_width


_NARROW, _WIDE = set("fijlrt.,:;!|' "), set("mwMW%@")


def text_width(text: str) -> int:
    """About how wide ``text`` is in Verdana 11 px (7 px a character, narrow and wide ones
    less and more)."""
    return round(sum(4 if c in _NARROW else 10 if c in _WIDE else 7 for c in text))
