"""The fleet grouped by one label: per group, its devices, their states, and their uptime and
downtime over the last day, week and month."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.domain.readmodels import (
    STATES,
    Expectations,
    FleetReads,
    active_windows,
    state_of,
)
from fleet_monitor.domain.timestamps import MINUTE_NS

# The windows a group is summarised over, each ending at the current minute (not counted: it
# is not over), as (name, minutes).
WINDOWS = (("24h", 1440), ("7d", 7 * 1440), ("30d", 30 * 1440))


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


def group_summaries(
    store: FleetReads, now_ns: int, expectations: Expectations, key: str
) -> list[GroupSummary]:
    """The fleet grouped by label ``key``, groups sorted by value, the group of devices
    without the label last. Each device costs one snapshot and one count over its last 30 days
    (three disjoint ranges, so the month's chunks are read once)."""
    now = now_ns // MINUTE_NS
    groups: dict[str | None, GroupSummary] = {}
    paused_by = active_windows(store, now_ns)
    for snapshot in store.snapshots():
        value = snapshot.profile.label(key)
        group = groups.get(value)
        if group is None:
            group = groups[value] = GroupSummary(value)
        group.devices += 1
        group.states[state_of(snapshot, now_ns, expectations, paused_by)] += 1
        first = snapshot.first_minute
        if first is None or first >= now:
            continue
        edges = [max(now - minutes, first) for _, minutes in reversed(WINDOWS)] + [now]
        pieces = [(edges[i], edges[i + 1]) for i in range(len(WINDOWS))]  # oldest first
        try:
            counts = store.heartbeat_counts(snapshot.device_id, pieces)
        except UnknownDeviceError:  # removed since the snapshots were read
            group.devices -= 1
            continue
        for n, (name, _) in enumerate(WINDOWS):  # 24h is the newest piece; 30d all three
            used = pieces[len(WINDOWS) - 1 - n :]
            group.watched[name] += sum(end - start for start, end in used)
            group.with_heartbeat[name] += sum(counts[len(WINDOWS) - 1 - n :])
    return sorted(groups.values(), key=lambda g: (g.value is None, g.value or ""))
