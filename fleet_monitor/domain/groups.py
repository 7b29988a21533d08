"""The fleet grouped by one label: per group, its devices, their states, and their uptime and
downtime over the last day, week and month."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet_monitor.domain.errors import InvalidInputError, UnknownDeviceError
from fleet_monitor.domain.outages import gaps
from fleet_monitor.domain.readmodels import (
    STATES,
    Expectations,
    FleetReads,
    active_windows,
    judge,
    state_of,
)
from fleet_monitor.domain.timestamps import MINUTE_NS

# The windows a group is summarised over, each ending at the current minute (not counted: it
# is not over), as (name, minutes).
WINDOWS = (("24h", 1440), ("7d", 7 * 1440), ("30d", 30 * 1440))
COUNT_BATCH = 1000  # devices whose counts are asked of the store at once


@dataclass
class GroupSummary:
    """One group: the devices whose label has ``value`` (None: devices without the label)."""

    value: str | None
    devices: int = 0
    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    watched: dict[str, int] = field(default_factory=lambda: dict.fromkeys(dict(WINDOWS), 0))
    with_heartbeat: dict[str, int] = field(default_factory=lambda: dict.fromkeys(dict(WINDOWS), 0))

    def uptime(self, window: str) -> float | None:
        """Percent of the group's watched minutes in ``window`` that had a heartbeat: the
        minutes from each device's first heartbeat to now (None when there are none)."""
        watched = self.watched[window]
        return 100 * self.with_heartbeat[window] / watched if watched else None

    def downtime_minutes(self, window: str) -> int:
        """The group's watched minutes in ``window`` without a heartbeat, summed."""
        return self.watched[window] - self.with_heartbeat[window]


Pending = list[tuple[GroupSummary, str, list[tuple[int, int]]]]  # group, device, its pieces


def group_summaries(
    store: FleetReads,
    now_ns: int,
    expectations: Expectations,
    key: str,
    selector: tuple[tuple[str, str], ...] = (),
) -> list[GroupSummary]:
    """The fleet (its devices with the labels of ``selector``) grouped by label ``key``,
    groups sorted by value, the group of devices without the label last.

    Without a selector, from the store's group index if it keeps one: each device costs the
    judging of its state, each group a few operations per window. Otherwise each device
    costs one snapshot and one count over its last 30 days (three disjoint ranges, so the
    month's chunks are read once), asked of the store a thousand devices at a time."""
    now = now_ns // MINUTE_NS
    groups: dict[str | None, GroupSummary] = {}
    paused_by = active_windows(store, now_ns)
    totals = None if selector else store.group_totals(key, now, [m for _, m in WINDOWS])
    if totals is not None:
        for head in store.heads():
            group = _member(groups, head.profile.label(key))
            group.states[judge(head, now_ns, expectations, paused_by)] += 1
        for value, group in groups.items():
            for (name, _), window in zip(WINDOWS, totals.get(value, ()), strict=False):
                group.watched[name] = window.watched
                group.with_heartbeat[name] = window.heartbeats
        return sorted(groups.values(), key=lambda g: (g.value is None, g.value or ""))
    pending: Pending = []
    for snapshot in store.snapshots():
        if selector and not snapshot.profile.matches(selector):
            continue
        group = _member(groups, snapshot.profile.label(key))
        group.states[state_of(snapshot, now_ns, expectations, paused_by)] += 1
        first = snapshot.first_minute
        if first is None or first >= now:
            continue
        edges = [max(now - minutes, first) for _, minutes in reversed(WINDOWS)] + [now]
        pieces = [(edges[i], edges[i + 1]) for i in range(len(WINDOWS))]  # oldest first
        pending.append((group, snapshot.device_id, pieces))
        if len(pending) == COUNT_BATCH:
            _count(store, pending)
    _count(store, pending)
    return sorted(groups.values(), key=lambda g: (g.value is None, g.value or ""))


def _member(groups: dict[str | None, GroupSummary], value: str | None) -> GroupSummary:
    """The group of ``value`` (made when it is the first), one device more."""
    group = groups.get(value)
    if group is None:
        group = groups[value] = GroupSummary(value)
    group.devices += 1
    return group


def _count(
    store: FleetReads, pending: list[tuple[GroupSummary, str, list[tuple[int, int]]]]
) -> None:
    """Add the windows' watched minutes and heartbeat counts of the ``pending`` devices to
    their groups, and empty it."""
    answers = store.heartbeat_counts_many([(device_id, pieces) for _, device_id, pieces in pending])
    for (group, _, pieces), counts in zip(pending, answers, strict=True):
        for n, (name, _) in enumerate(WINDOWS):  # 24h is the newest piece; 30d all three
            newest = len(WINDOWS) - 1 - n
            group.watched[name] += sum(end - start for start, end in pieces[newest:])
            group.with_heartbeat[name] += sum(counts[newest:])
    pending.clear()


MAX_SITE_WINDOW = 31 * 1440  # minutes a site-outage read may cover
MAX_SITE_CELLS = 5_000_000  # groups x minutes a site-outage read may hold (about 80 MB)


@dataclass(frozen=True)
class SiteOutage:
    """Minutes ``start`` to ``end - 1`` in which more than the threshold of a group's watched
    devices had no heartbeat; ``peak`` the largest share down (percent) in them."""

    start: int
    end: int
    peak: float


@dataclass(frozen=True)
class GroupOutages:
    """A group's site outages (``devices``: how many it has)."""

    value: str | None
    devices: int
    outages: list[SiteOutage]


def site_outages(
    store: FleetReads,
    key: str,
    window: tuple[int, int],
    threshold: float,
    selector: tuple[tuple[str, str], ...] = (),
) -> list[GroupOutages]:
    """For each group of label ``key`` (sorted as :func:`group_summaries`), the runs of minutes
    of ``window`` (``start <= m < end``, already cut at the current minute) in which more than
    ``threshold`` percent of the group's watched devices (those past their first heartbeat) had
    no heartbeat. Each device costs one scan of its bitmap over the window; each group, one
    pass over the window's minutes."""
    start, end = window
    width = max(0, end - start)
    down: dict[str | None, list[int]] = {}
    watched: dict[str | None, list[int]] = {}
    sizes: dict[str | None, int] = {}
    for snapshot in store.snapshots():
        if selector and not snapshot.profile.matches(selector):
            continue
        value = snapshot.profile.label(key)
        sizes[value] = sizes.get(value, 0) + 1
        if value not in down:
            if (len(down) + 1) * (width + 1) > MAX_SITE_CELLS:
                raise InvalidInputError(
                    f"site outages of over {MAX_SITE_CELLS // (width + 1)} groups in a window "
                    f"of {width} minutes are too many at once: narrow them with label= or a "
                    "shorter window",
                    "invalid_query",
                )
            down[value], watched[value] = [0] * (width + 1), [0] * (width + 1)
        first = snapshot.first_minute
        if first is None or first >= end or not width:
            continue
        low = max(start, first)
        watched[value][low - start] += 1
        watched[value][width] -= 1
        try:
            chunks = store.heartbeat_chunks(snapshot.device_id, low, end)
            for run_start, run_end in gaps(chunks, low, end):
                down[value][run_start - start] += 1
                down[value][run_end - start] -= 1
        except UnknownDeviceError:  # removed since the snapshots were read
            sizes[value] -= 1
            watched[value][low - start] -= 1
            watched[value][width] += 1
    found = []
    for value in sorted(sizes, key=lambda v: (v is None, v or "")):
        found.append(
            GroupOutages(value, sizes[value], _runs(down[value], watched[value], start, threshold))
        )
    return found


def _runs(down: list[int], watched: list[int], start: int, threshold: float) -> list[SiteOutage]:
    """The runs of minutes whose share down (from the difference arrays) exceeds
    ``threshold``."""
    runs: list[SiteOutage] = []
    now_down = now_watched = 0
    open_at: int | None = None
    peak = 0.0
    for offset in range(len(down) - 1):
        now_down += down[offset]
        now_watched += watched[offset]
        share = 100 * now_down / now_watched if now_watched else 0.0
        if share > threshold:
            if open_at is None:
                open_at, peak = start + offset, share
            peak = max(peak, share)
        elif open_at is not None:
            runs.append(SiteOutage(open_at, start + offset, peak))
            open_at = None
    if open_at is not None:
        runs.append(SiteOutage(open_at, start + len(down) - 1, peak))
    return runs
