"""The memory store's group indexes: made the first time a label key is grouped by, then kept
up to date by every change of a device, so ``GET /fleet?group_by=`` costs a pass over the
devices' states and a few operations per group, not a bitmap read per device.

At most :data:`MAX_KEYS` keys are indexed (the least recently read is dropped), each of at most
:data:`~fleet_monitor.domain.group_index.MAX_GROUPS` values (a key with more is not indexed:
its reads count device by device). Lock order: a device's lock, then this one's; an index is
made device by device, each under its own lock, so writes never wait for a whole build.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from fleet_monitor.domain.bitmaps import MinuteSet
from fleet_monitor.domain.group_index import GroupIndex, GroupTotals, TooManyGroupsError
from fleet_monitor.domain.profiles import Profile

MAX_KEYS = 4  # label keys indexed at once

log = logging.getLogger(__name__)


class IndexedHistory(Protocol):
    """What an index counts of a device's history."""

    @property
    def profile(self) -> Profile:
        """The device's labels."""

    @property
    def minutes(self) -> MinuteSet:
        """The device's heartbeat minutes."""


class IndexedDevice(Protocol):
    """A device as an index is made from it: its lock, and its history (read under it)."""

    @property
    def lock(self) -> threading.Lock:
        """Held while the history is read."""

    @property
    def removed(self) -> bool:
        """Whether it left the fleet."""

    @property
    def history(self) -> IndexedHistory:
        """Its history."""


class GroupIndexes:
    """The indexes, and the changes they follow (each called under the device's lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, GroupIndex] = OrderedDict()  # ready, least used first
        self._building: dict[str, GroupIndex] = {}
        self._builder = threading.Lock()  # one build at a time; other readers wait for it
        self._refused: dict[str, int] = {}  # key -> profile generation it had too many values in
        self._generation = 0  # profile changes so far
        self._live: tuple[GroupIndex, ...] = ()  # ready and being made: those changes reach
        self.active = False  # whether any index follows changes (read without the lock)

    def _changed(self) -> None:
        """Note which indexes follow changes (call under the lock)."""
        self._live = (*self._indexes.values(), *self._building.values())
        self.active = bool(self._live)

    def _update(self, change: Callable[[GroupIndex], None]) -> None:
        """Apply ``change`` to every live index. One that refuses it (too many values) is
        dropped and the key refused; one that fails otherwise is dropped and logged (it is
        made anew at the next read): a write never fails for an index."""
        with self._lock:
            for index in self._live:
                try:
                    change(index)
                except TooManyGroupsError:
                    self._drop(index.key)
                    self._refused[index.key] = self._generation
                except Exception:
                    log.exception("group index of %r dropped", index.key)
                    self._drop(index.key)

    def _drop(self, key: str) -> None:
        self._indexes.pop(key, None)
        self._building.pop(key, None)
        self._changed()

    def joined(self, device_id: str, profile: Profile, minutes: MinuteSet) -> None:
        """A device joined the fleet."""
        if self.active:
            self._update(lambda index: index.add(device_id, profile, minutes))

    def left(self, device_id: str, minutes: MinuteSet) -> None:
        """A device left the fleet (``minutes``: its bitmap)."""
        if self.active:
            self._update(lambda index: index.remove(device_id, minutes))

    def heartbeat(self, device_id: str, minute: int, first_before: int | None) -> None:
        """A device's bitmap gained ``minute``."""
        if self.active:
            self._update(lambda index: index.heartbeat(device_id, minute, first_before))

    def profiled(self, device_id: str, before: Profile, after: Profile, minutes: MinuteSet) -> None:
        """A device's profile changed."""
        with self._lock:
            self._generation += 1
        if self.active:
            self._update(lambda index: index.move(device_id, before, after, minutes))

    def clear(self) -> None:
        """Drop every index (histories changed without them: they are made anew)."""
        if not self.active:
            return
        with self._lock:
            self._indexes.clear()
            self._building.clear()
            self._changed()

    def keys(self) -> list[str]:
        """The keys indexed, the least recently read first."""
        with self._lock:
            return list(self._indexes)

    def totals(
        self,
        key: str,
        now: int,
        windows: Sequence[int],
        devices: Callable[[], Iterable[tuple[str, IndexedDevice]]],
    ) -> GroupTotals | None:
        """Each group of ``key``'s totals over each window (see :meth:`GroupIndex.totals`),
        making the index first if there is none covering ``now`` (from ``devices``); None
        for a key with too many values (or indexes dropped while it was made): count device
        by device then."""
        found, answer = self._read(key, now, windows)
        if found:
            return answer
        with self._builder:
            found, answer = self._read(key, now, windows)
            return answer if found else self._build(key, now, windows, devices)

    def _read(self, key: str, now: int, windows: Sequence[int]) -> tuple[bool, GroupTotals | None]:
        """Whether there is an answer without a build, and it (None: a refused key)."""
        with self._lock:
            if self._refused.get(key) == self._generation:
                return True, None
            index = self._indexes.get(key)
            if index is None or not index.covers(now, max(windows)):
                return False, None
            self._indexes.move_to_end(key)
            return True, index.totals(now, windows)

    def _build(
        self,
        key: str,
        now: int,
        windows: Sequence[int],
        devices: Callable[[], Iterable[tuple[str, IndexedDevice]]],
    ) -> GroupTotals | None:
        index = GroupIndex(key, now, max(windows), bulk=True)
        with self._lock:
            self._building[key] = index
            self._changed()
        for device_id, device in devices():
            with device.lock, self._lock:
                if self._building.get(key) is not index:  # refused or cleared meanwhile
                    return None
                if device.removed:
                    continue
                try:
                    index.add(device_id, device.history.profile, device.history.minutes)
                except TooManyGroupsError:
                    self._drop(key)
                    self._refused[key] = self._generation
                    return None
        with self._lock:
            if self._building.get(key) is not index:
                return None
            del self._building[key]
            index.finish_bulk()
            self._indexes[key] = index
            self._indexes.move_to_end(key)
            while len(self._indexes) > MAX_KEYS:
                self._indexes.popitem(last=False)
            self._changed()
            self._refused.pop(key, None)
            return index.totals(now, windows)
