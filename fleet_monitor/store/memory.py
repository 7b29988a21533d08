"""The memory store: every device's history in this process, optionally journaled.

Each device has its own lock, held only while one of its histories is read or changed, and the
fleet has one, held only while the registry (the dict of devices and the sorted id list) is
read or changed, never while a history is. A write is checked (key, budget), journaled, then
applied, so a journal that refuses it (StoreUnavailableError) leaves nothing changed; replay at
start-up applies what the journal holds without checks. Persistence (journal, snapshots) is
attached by :mod:`fleet_monitor.store.durable`.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from fleet_monitor.domain.devices import check_device_id
from fleet_monitor.domain.errors import (
    InvalidInputError,
    NotConfirmedError,
    StoreUnavailableError,
    UnknownDeviceError,
)
from fleet_monitor.domain.events import Event, Heartbeat
from fleet_monitor.domain.group_index import GroupTotals
from fleet_monitor.domain.history import DeviceHead, DeviceHistory, DeviceSnapshot
from fleet_monitor.domain.limits import UNLIMITED, HistoryBudget, fleet_full, windows_full
from fleet_monitor.domain.maintenance import MAX_WINDOWS, MaintenanceWindow, by_start
from fleet_monitor.domain.profiles import EMPTY, Profile
from fleet_monitor.domain.timestamps import minute_of
from fleet_monitor.domain.uploads import UploadAggregate
from fleet_monitor.store.group_indexes import GroupIndexes

REGISTERED, REMOVED = "register", "remove"  # registry changes, as the journal names them
PROFILED = "profile"  # a device's profile set
MAINTAINED, UNMAINTAINED = "maintenance", "end-maintenance"  # a window added, removed


class ChangeLog(Protocol):
    """Where changes are written before they are applied (the journal)."""

    def append(self, kind: str, device_id: str, event: Event | None, key: str | None) -> int:
        """Write one change (an event's kind with its idempotency key, REGISTERED/REMOVED, or
        PROFILED with the profile's JSON as ``key``); return its lsn. Raises
        StoreUnavailableError when it could not be written."""

    def durable(self, lsn: int) -> None:
        """Wait until change ``lsn`` is durable (called with no lock held); raises
        StoreUnavailableError when it cannot be made so."""

    def flush(self) -> None:
        """Wait until every change written so far is durable (as :meth:`durable`)."""

    def problem(self) -> str | None:
        """Why changes cannot be written now, or None."""


class Device:
    """A device's history with its lock and the lsn of its latest journaled change."""

    __slots__ = ("history", "lock", "lsn", "removed")

    def __init__(self, history: DeviceHistory | None = None, lsn: int = 0) -> None:
        self.history = history or DeviceHistory()
        self.lock = threading.Lock()
        self.lsn = lsn
        self.removed = False  # set when the fleet drops it: later writes are refused


class MemoryStore:
    """The fleet's devices by id, with a sorted index for paging; safe across threads."""

    def __init__(
        self,
        device_ids: Iterable[str] = (),
        *,
        budget: HistoryBudget | None = None,
        max_devices: int = UNLIMITED,
    ) -> None:
        self.budget = budget or HistoryBudget()
        self.max_devices = max_devices  # registrations past it are refused (the CSV's are not)
        self._lock = threading.Lock()
        self._devices: dict[str, Device] = {}
        self._sorted_ids: list[str] = []
        self._journal: ChangeLog | None = None
        self.registry_lsn = 0  # the lsn of the latest registration or removal
        self.removed: set[str] = set()  # removed at run time and not registered since
        self._windows: dict[str, MaintenanceWindow] = {}
        self._groups = GroupIndexes()
        self.add_all(device_ids)

    # --- the registry ---------------------------------------------------------------------

    def add_all(self, device_ids: Iterable[str]) -> int:
        """Add each of ``device_ids`` neither in the fleet nor removed at run time (from a
        validated file, so unchecked and not journaled: the file is read again at each start);
        return how many were new."""
        with self._lock:
            before = len(self._devices)
            for device_id in device_ids:
                if device_id not in self._devices and device_id not in self.removed:
                    device = Device()  # counted before a write can reach it
                    self._groups.joined(device_id, EMPTY, device.history.minutes)
                    self._devices[device_id] = device
            added = len(self._devices) - before
            if added:
                self._sorted_ids = sorted(self._devices)
            return added

    def register(self, device_id: str) -> bool:
        """Add ``device_id`` (checked against the id rule); return False if it was there.
        Raises LimitExceededError when the fleet already holds ``max_devices``."""
        check_device_id(device_id)
        with self._lock:
            known, lsn = device_id in self._devices, self.registry_lsn
        if known:  # a retry's answer promises what the first one's did
            self._durable(lsn)
            return False
        with self._lock:
            if device_id in self._devices:
                return False
            if len(self._devices) >= self.max_devices:
                raise fleet_full(len(self._devices))
            if self._journal is not None:
                self.registry_lsn = self._journal.append(REGISTERED, device_id, None, None)
            lsn = self.registry_lsn
            self.apply_registration(device_id, lsn)
        self._durable(lsn)
        return True

    def remove(self, device_id: str) -> None:
        """Remove ``device_id`` and its history; raises UnknownDeviceError."""
        with self._lock:
            if device_id not in self._devices:
                raise UnknownDeviceError(device_id)
            if self._journal is not None:
                self.registry_lsn = self._journal.append(REMOVED, device_id, None, None)
            self.apply_removal(device_id)
            lsn = self.registry_lsn
        self._durable(lsn)

    def apply_registration(self, device_id: str, lsn: int = 0) -> bool:
        """Add ``device_id`` unchecked (a journaled registration at ``lsn``). Call under the
        fleet lock (or before serving). The device starts at its registration's lsn, so a
        replayed event of an earlier device of the same id is never applied to it."""
        if device_id in self._devices:
            return False
        device = Device(lsn=lsn)  # counted before a write can reach it
        self._groups.joined(device_id, EMPTY, device.history.minutes)
        self._devices[device_id] = device
        insort(self._sorted_ids, device_id)
        self.removed.discard(device_id)
        return True

    def apply_removal(self, device_id: str) -> bool:
        """Drop ``device_id`` unchecked (a journaled removal); see :meth:`apply_registration`."""
        device = self._devices.pop(device_id, None)
        if device is None:
            return False
        del self._sorted_ids[bisect_left(self._sorted_ids, device_id)]
        self.removed.add(device_id)
        with device.lock:  # a write racing the removal sees it, and is refused
            device.removed = True
            self._groups.left(device_id, device.history.minutes)
            self.budget.adjust(-device.history.cost())
        return True

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[str]:
        """The ids, in the order they were added (a copy: the fleet may change meanwhile)."""
        with self._lock:
            return iter(list(self._devices))

    def ids_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` device ids in sorted order, each greater than ``after``.

        Paging by the last id seen never repeats an id, whatever is added or removed between
        two pages.
        """
        with self._lock:
            index = 0 if after is None else bisect_right(self._sorted_ids, after)
            return self._sorted_ids[index : index + count]

    def device(self, device_id: str) -> Device:
        """The device ``device_id``; raises UnknownDeviceError."""
        device = self._devices.get(device_id)
        if device is None:
            raise UnknownDeviceError(device_id)
        return device

    def devices(self) -> list[tuple[str, Device]]:
        """Every device, copied under the fleet lock (held for the copy only)."""
        with self._lock:
            return list(self._devices.items())

    def registry_state(self) -> tuple[int, list[str], list[tuple[str, Device]]]:
        """The registry lsn, the removed ids and the devices, copied under the fleet lock."""
        with self._lock:
            return self.registry_lsn, sorted(self.removed), list(self._devices.items())

    def fleet_state(self) -> tuple[int, list[str], list[tuple[str, Device]], list[str]]:
        """:meth:`registry_state` and the maintenance windows as JSON, copied under the fleet
        lock at once: a snapshot's fleet-wide state."""
        with self._lock:
            windows = [window.dumps() for window in self._windows.values()]
            return self.registry_lsn, sorted(self.removed), list(self._devices.items()), windows

    # --- maintenance windows --------------------------------------------------------------

    def maintenance(self) -> list[MaintenanceWindow]:
        """The maintenance windows, by start."""
        with self._lock:
            return by_start(self._windows.values())

    def add_maintenance(self, window: MaintenanceWindow) -> None:
        """Keep ``window`` (journaled first); raises LimitExceededError past MAX_WINDOWS."""
        with self._lock:
            if len(self._windows) >= MAX_WINDOWS:
                raise windows_full(len(self._windows))
            if self._journal is not None:
                self.registry_lsn = self._journal.append(
                    MAINTAINED, window.id, None, window.dumps()
                )
            self._windows[window.id] = window
            lsn = self.registry_lsn
        self._durable(lsn)

    def remove_maintenance(self, window_id: str) -> bool:
        """Drop a window (journaled first); False if there was none of that id."""
        with self._lock:
            if window_id not in self._windows:
                return False
            if self._journal is not None:
                self.registry_lsn = self._journal.append(UNMAINTAINED, window_id, None, None)
            del self._windows[window_id]
            lsn = self.registry_lsn
        self._durable(lsn)
        return True

    def apply_windows(self, windows: Iterable[MaintenanceWindow]) -> None:
        """Put the windows of a snapshot back (before serving)."""
        self._windows = {window.id: window for window in windows}

    def replay_window(self, lsn: int, window_id: str, window: MaintenanceWindow | None) -> None:
        """Apply a journaled window change once (a removal when ``window`` is None)."""
        if lsn <= self.registry_lsn:
            return
        self.registry_lsn = lsn
        if window is None:
            self._windows.pop(window_id, None)
        else:
            self._windows[window_id] = window

    # --- writes ---------------------------------------------------------------------------

    def attach_journal(self, journal: ChangeLog) -> None:
        """Journal every change from now on."""
        with self._lock:
            self._journal = journal

    def record_many(self, events: Sequence[tuple[str, Event]]) -> list[bool | Exception]:
        """Each event recorded (not waiting for durability: :meth:`flush`), in order; for
        each, what :meth:`record` returns or the refusal it raised."""
        outcomes: list[bool | Exception] = []
        for device_id, event in events:
            try:
                outcomes.append(self.record(device_id, event, None, wait=False))
            except (UnknownDeviceError, InvalidInputError, StoreUnavailableError) as error:
                outcomes.append(error)
        return outcomes

    def record(self, device_id: str, event: Event, key: str | None, *, wait: bool = True) -> bool:
        """Record ``event`` for the device; return False for a repeat of ``key``, and for a
        heartbeat whose minute the device already had. With ``wait=False`` the change is not
        yet durable on return: :meth:`flush` waits for it (a batch waits once).

        Checked first (the device, the key, the history budget), then journaled, then applied:
        any error before that leaves the device and the budget as they were. The answer waits
        for the journal's fsync (``--fsync always``) after the device's lock is released, so
        reads of the device never wait for a disk; a repeat waits for the device's latest
        change, so its 204 promises what the first one did.
        """
        device = self.device(device_id)
        with device.lock:
            if device.removed:
                raise UnknownDeviceError(device_id)
            history = device.history
            if history.is_repeat(event, key):
                new, lsn = False, device.lsn
            else:
                before, extra = history.cost(), history.growth(event, key)
                self.budget.reserve(before, extra)
                try:
                    if self._journal is not None:
                        device.lsn = self._journal.append(event.kind, device_id, event, key)
                except BaseException:
                    self.budget.adjust(-extra)
                    raise
                first_before = history.minutes.first
                new, lsn = history.apply(event, key), device.lsn
                if new and self._groups.active and isinstance(event, Heartbeat):
                    self._groups.heartbeat(device_id, minute_of(event.sent_at_ns), first_before)
                self.budget.adjust(history.cost() - before - extra)
        if wait:
            self._durable(lsn)
        return new

    def flush(self) -> None:
        """Wait until every change recorded so far is durable; raises NotConfirmedError."""
        if self._journal is not None:
            try:
                self._journal.flush()
            except StoreUnavailableError as error:
                raise NotConfirmedError(str(error)) from None

    def _durable(self, lsn: int) -> None:
        """Wait (holding no lock) until change ``lsn`` is durable, if journaling; raises
        NotConfirmedError when it cannot be made so (the change stays applied)."""
        if self._journal is not None and lsn:
            try:
                self._journal.durable(lsn)
            except StoreUnavailableError as error:
                raise NotConfirmedError(str(error)) from None

    def set_profile(self, device_id: str, profile: Profile) -> None:
        """Give ``device_id`` ``profile`` (journaled first); raises UnknownDeviceError."""
        device = self.device(device_id)
        with device.lock:
            if device.removed:
                raise UnknownDeviceError(device_id)
            if self._journal is not None:
                device.lsn = self._journal.append(PROFILED, device_id, None, profile.to_json())
            self._profile(device_id, device, profile)
            lsn = device.lsn
        self._durable(lsn)

    def apply_file_profiles(self, profiles: Mapping[str, Profile]) -> int:
        """Give each device the profile of its devices-file row (``profiles``: the whole
        file's; a device without one gets none), unless the API set its profile (not
        journaled: the file is read at every start); return how many changed."""
        changed = 0
        for device_id, device in self.devices():
            profile = profiles.get(device_id, EMPTY)
            with device.lock:
                if device.removed:
                    continue
                current = device.history.profile
                if current != profile and (current == EMPTY or current.from_file):
                    self._profile(device_id, device, profile)
                    changed += 1
        return changed

    def replay_profile(self, lsn: int, device_id: str, profile: Profile) -> None:
        """Apply a journaled profile once (see :meth:`replay`)."""
        device = self._devices.get(device_id)
        if device is None:
            return
        with device.lock:
            if lsn > device.lsn:
                device.lsn = lsn
                self._profile(device_id, device, profile)

    def _profile(self, device_id: str, device: Device, profile: Profile) -> None:
        """Give the device ``profile`` (called under its lock)."""
        before, device.history.profile = device.history.profile, profile
        self._groups.profiled(device_id, before, profile, device.history.minutes)

    def replay(self, lsn: int, device_id: str, event: Event, key: str | None) -> None:
        """Apply a journaled event once (counted in the budget, never refused): an event the
        device already holds (by lsn), or of a device removed since, is skipped."""
        device = self._devices.get(device_id)
        if device is None:
            return
        self._groups.clear()  # made anew at the next read (replay comes before serving)
        with device.lock:
            if lsn <= device.lsn:
                return
            device.lsn = lsn
            before = device.history.cost()
            device.history.apply(event, key)
            self.budget.adjust(device.history.cost() - before)

    def restore(self, device_id: str, lsn: int, history: DeviceHistory) -> None:
        """Put a device back as a snapshot held it (before serving)."""
        self._groups.clear()
        with self._lock:
            if device_id not in self._devices:
                insort(self._sorted_ids, device_id)
            self._devices[device_id] = Device(history, lsn)
        self.budget.adjust(history.cost())

    # --- reads ----------------------------------------------------------------------------

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """One device's counters, in O(1); raises UnknownDeviceError."""
        device = self.device(device_id)
        with device.lock:
            return device.history.snapshot(device_id)

    def snapshots(self) -> Iterator[DeviceSnapshot]:
        """Every device's counters, one device lock at a time (released before each is
        yielded: the caller's work never holds a device's lock)."""
        for device_id, device in self.devices():
            with device.lock:
                snapshot = device.history.snapshot(device_id)
            yield snapshot

    def heads(self) -> Iterator[DeviceHead]:
        """What each device's state is judged on, read without its lock (each field is
        read whole; a device changed meanwhile is judged as one or the other)."""
        for device_id, device in self.devices():
            yield DeviceHead.of(device_id, device.history)

    def group_totals(self, key: str, now: int, windows: Sequence[int]) -> GroupTotals | None:
        """Each group of label ``key``'s totals over windows of ``windows`` minutes ending at
        ``now``, from an index kept up to date (made at the first read of ``key``); None
        when ``key`` has too many values to be indexed."""
        return self._groups.totals(key, now, windows, self.devices)

    def indexed_keys(self) -> list[str]:
        """The label keys with a group index, the least recently read first."""
        return self._groups.keys()

    def heartbeat_counts(self, device_id: str, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """For each ``(start, end)``, how many heartbeat minutes ``start <= m < end``."""
        device = self.device(device_id)
        with device.lock:
            minutes = device.history.minutes
            return [minutes.count_between(start, end) for start, end in ranges]

    def heartbeat_counts_many(
        self, requests: Sequence[tuple[str, Sequence[tuple[int, int]]]]
    ) -> list[list[int]]:
        """:meth:`heartbeat_counts` of many devices (zeros for one not in the fleet)."""
        results = []
        for device_id, ranges in requests:
            try:
                results.append(self.heartbeat_counts(device_id, ranges))
            except UnknownDeviceError:
                results.append([0] * len(ranges))
        return results

    def heartbeat_chunks(self, device_id: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The device's bitmap chunks meeting ``start <= m < end`` (copied under its lock)."""
        device = self.device(device_id)
        with device.lock:
            return iter(device.history.minutes.chunk_bits(start, end))

    def upload_aggregates(
        self, device_id: str, ranges: Sequence[tuple[int, int]]
    ) -> list[UploadAggregate]:
        """For each ``(start, end)``, the uploads of minutes ``start <= m < end``."""
        device = self.device(device_id)
        with device.lock:
            uploads = device.history.uploads
            return [uploads.between(start, end) for start, end in ranges]

    def history_bytes(self) -> int:
        """Estimated bytes of history the fleet holds."""
        return self.budget.used

    def problem(self) -> str | None:
        """Why changes cannot be stored now (the journal's trouble), or None."""
        return None if self._journal is None else self._journal.problem()
