"""What the status pages show: per device its view, its uptime over the standard windows and a
heartbeat bar of the last :data:`BAR_BUCKETS` steps; for one device also its outages, its
upload times per step and its maintenance windows. Read through :class:`FleetReads`, so the
same on every store; rendering is the HTTP layer's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.domain.groups import WINDOWS
from fleet_monitor.domain.history import DeviceSnapshot
from fleet_monitor.domain.maintenance import MaintenanceWindow, minutes_in
from fleet_monitor.domain.outages import Outage, OutageTotals, outage_page
from fleet_monitor.domain.readmodels import (
    DeviceView,
    FleetReads,
    UptimeBucket,
    Window,
    upload_series,
    uptime_series,
)
from fleet_monitor.domain.timestamps import MINUTE_NS
from fleet_monitor.domain.uploads import UploadAggregate

BAR_STEPS = ("1m", "1h", "1d")  # the widths a heartbeat bar's buckets may have
DEFAULT_BAR_STEP = "1h"
BAR_BUCKETS = 90
OUTAGE_DAYS = 30  # a device page's outages: those of the last 30 days
MAX_OUTAGES = 100  # the newest this many of them are listed (the totals count all)
UPTIME_WINDOWS = (*(name for name, _ in WINDOWS), "all")


def window_uptimes(
    store: FleetReads, snapshot: DeviceSnapshot, now_ns: int
) -> dict[str, float | None]:
    """The device's uptime (percent) over each of :data:`UPTIME_WINDOWS`: the share of its
    minutes from its first heartbeat (or the window's start) to the current minute (not
    counted) that had one, in one read of its bitmap; ``all`` is the SPEC's uptime. None where
    it has no minute yet."""
    first = snapshot.first_minute
    found: dict[str, float | None] = dict.fromkeys(UPTIME_WINDOWS)
    if first is None:
        return found
    now = now_ns // MINUTE_NS
    ranges = {name: (max(now - minutes, first), now) for name, minutes in WINDOWS}
    wanted = {name: edges for name, edges in ranges.items() if edges[1] > edges[0]}
    counts = store.heartbeat_counts(snapshot.device_id, list(wanted.values())) if wanted else []
    for (name, (start, end)), seen in zip(wanted.items(), counts, strict=True):
        found[name] = 100 * seen / (end - start)
    found["all"] = snapshot.uptime
    return found


def bar_window(now_ns: int, step: str) -> Window:
    """The last :data:`BAR_BUCKETS` whole steps of ``step`` before the current one, and the
    current one so far."""
    minutes = Window(0, 0, step).step_minutes
    now = now_ns // MINUTE_NS
    end = (now // minutes + 1) * minutes
    return Window((end - BAR_BUCKETS * minutes) * MINUTE_NS, (now + 1) * MINUTE_NS, step)


@dataclass(frozen=True)
class DeviceRow:
    """A device as a status page lists it."""

    view: DeviceView
    uptimes: dict[str, float | None]
    bar: list[UptimeBucket]


def device_rows(
    store: FleetReads, views: Sequence[DeviceView], now_ns: int, bar_step: str
) -> list[DeviceRow]:
    """Each of ``views`` with its uptimes and heartbeat bar (two reads of its bitmap; the bar
    counts the minutes from the first heartbeat to now, so a silent device's are down); a
    device removed meanwhile is left out."""
    window, now = bar_window(now_ns, bar_step), now_ns // MINUTE_NS
    rows = []
    for view in views:
        device_id = view.snapshot.device_id
        try:
            bar = uptime_series(store, device_id, window, watched_until=now)[1]
        except UnknownDeviceError:
            continue
        rows.append(DeviceRow(view, window_uptimes(store, view.snapshot, now_ns), bar))
    return rows


@dataclass(frozen=True)
class DeviceStory:
    """One device's page: its row, its outages of the last :data:`OUTAGE_DAYS` days (the
    totals, and the newest :data:`MAX_OUTAGES` newest first), its upload times per bar step,
    and the maintenance windows that cover it."""

    row: DeviceRow
    outages: OutageTotals
    recent: list[Outage]
    uploads: list[tuple[int, UploadAggregate]]
    windows: list[MaintenanceWindow]


def device_story(store: FleetReads, view: DeviceView, now_ns: int, bar_step: str) -> DeviceStory:
    """The page of ``view``'s device."""
    snapshot = view.snapshot
    device_id, profile = snapshot.device_id, snapshot.profile
    windows = [w for w in store.maintenance() if w.applies_to(device_id, profile)]
    now = now_ns // MINUTE_NS
    start = now - OUTAGE_DAYS * 1440
    low = max(start, snapshot.first_minute or start)
    found = outage_page(
        store,
        device_id,
        (snapshot.first_minute, snapshot.last_minute),
        now,
        (start, now),
        at_least=1,
        after=None,
        limit=OUTAGE_DAYS * 1440,  # every one: at most one a minute
        maintained=minutes_in(windows, device_id, profile, low, max(low, now)),
    )
    rows = device_rows(store, [view], now_ns, bar_step)
    if not rows:
        raise UnknownDeviceError(device_id)
    (row,) = rows
    uploads = upload_series(store, device_id, bar_window(now_ns, bar_step))[1]
    recent = found.outages[: -MAX_OUTAGES - 1 : -1]
    return DeviceStory(row, found.totals, recent, uploads, windows)
