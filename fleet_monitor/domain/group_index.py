"""The fleet's heartbeats summed per group of one label, kept up to date as they arrive.

A :class:`GroupIndex` holds, for each value of its label key, how many of the group's devices
had a heartbeat in each minute of a span (:class:`MinuteCounts`) and the sorted first minutes
of its devices, so a group's heartbeat and watched minutes over any window of the last
``longest`` minutes cost a few big-integer operations, not one bitmap read per device. The
span runs from a day before the longest window to a week ahead of the clock when it was made;
heartbeats outside it are not counted, and once the clock leaves it the index is made anew.

Not thread-safe: its owner serialises every call (and calls each change while holding the
device's own lock, so a change and the device's place in the index never disagree).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleet_monitor.domain.bitmaps import MinuteSet
from fleet_monitor.domain.minute_counts import MinuteCounts
from fleet_monitor.domain.profiles import Profile

MAX_GROUPS = 100  # values of one key an index holds; a key with more is not indexed
PAST_MARGIN = 1440  # minutes kept before the longest window (the clock may step back)
FUTURE_MINUTES = 7 * 1440  # minutes counted ahead of the clock (then the index is made anew)


class TooManyGroupsError(Exception):
    """The key has more than :data:`MAX_GROUPS` values: it is not indexed."""


@dataclass
class _Group:
    counts: MinuteCounts
    firsts: list[int] = field(default_factory=list)  # its devices' first minutes, sorted
    size: int = 0


@dataclass(frozen=True)
class WindowTotals:
    """A group over one window: its devices' minutes from their first heartbeat (or the
    window's start) to now, and how many of those had a heartbeat."""

    watched: int
    heartbeats: int


GroupTotals = dict[str | None, list[WindowTotals]]  # per value (None: without the label)


class GroupIndex:
    """Heartbeat counts per value of label ``key`` over the minutes around ``now``."""

    def __init__(self, key: str, now: int, longest: int, *, bulk: bool = False) -> None:
        """An empty index; with ``bulk``, one about to be given many devices' histories
        (:meth:`finish_bulk` once they are in)."""
        self.key = key
        self._bulk = bulk
        self.longest = longest
        self.base = now - longest - PAST_MARGIN
        self.span = longest + PAST_MARGIN + FUTURE_MINUTES
        self.members: dict[str, str | None] = {}
        self.groups: dict[str | None, _Group] = {}

    def finish_bulk(self) -> None:
        """The histories are in: from now on heartbeats are added in place."""
        self._bulk = False
        for group in self.groups.values():
            group.counts.finish_bulk()

    def covers(self, now: int, longest: int | None = None) -> bool:
        """Whether windows of up to ``longest`` minutes (default: the index's) ending at
        ``now`` are in the span."""
        longest = self.longest if longest is None else longest
        return (
            longest <= self.longest and self.base <= now - longest and now <= self.base + self.span
        )

    def add(self, device_id: str, profile: Profile, minutes: MinuteSet) -> None:
        """Count a device not counted yet (a member already is left be); raises
        TooManyGroupsError when it would make one group too many."""
        if device_id in self.members:
            return
        value = profile.label(self.key)
        group = self.groups.get(value)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                raise TooManyGroupsError(self.key)
            counts = MinuteCounts(self.base, self.span, bulk=self._bulk)
            group = self.groups[value] = _Group(counts)
        self.members[device_id] = value
        group.size += 1
        group.counts.add(minutes.bits_between(self.base, self.base + self.span))
        if minutes.first is not None:
            insort(group.firsts, minutes.first)

    def remove(self, device_id: str, minutes: MinuteSet) -> None:
        """Stop counting a device (``minutes``: its bitmap, as counted)."""
        if device_id not in self.members:
            return
        value = self.members.pop(device_id)
        group = self.groups[value]
        group.counts.subtract(minutes.bits_between(self.base, self.base + self.span))
        if minutes.first is not None:
            del group.firsts[bisect_left(group.firsts, minutes.first)]
        group.size -= 1
        if not group.size:
            del self.groups[value]

    def move(self, device_id: str, before: Profile, after: Profile, minutes: MinuteSet) -> None:
        """A member's profile changed from ``before`` to ``after``: count it in its new group
        (raises TooManyGroupsError as :meth:`add`)."""
        if device_id in self.members and before.label(self.key) != after.label(self.key):
            self.remove(device_id, minutes)
            self.add(device_id, after, minutes)

    def heartbeat(self, device_id: str, minute: int, first_before: int | None) -> None:
        """A member's bitmap gained ``minute`` (its first minute was ``first_before``)."""
        if device_id not in self.members:
            return
        group = self.groups[self.members[device_id]]
        group.counts.add_minute(minute)
        if first_before is None or minute < first_before:
            if first_before is not None:
                del group.firsts[bisect_left(group.firsts, first_before)]
            insort(group.firsts, minute)

    def totals(self, now: int, windows: Sequence[int]) -> GroupTotals:
        """For each group, its totals over each window of ``windows`` minutes ending at
        ``now`` (not counted: it is not over); ``now`` must be :meth:`covered <covers>`."""
        found = {}
        for value, group in self.groups.items():
            firsts = group.firsts
            watching = bisect_left(firsts, now)  # devices whose first minute has passed
            heartbeats = group.counts.totals([(now - minutes, now) for minutes in windows])
            totals = []
            for minutes, seen in zip(windows, heartbeats, strict=True):
                whole = bisect_right(firsts, now - minutes, 0, watching)  # the whole window
                recent = firsts[whole:watching]
                watched = whole * minutes + len(recent) * now - sum(recent)
                totals.append(WindowTotals(watched, seen))
            found[value] = totals
        return found
