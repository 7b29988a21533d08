"""The fleet: each device's heartbeat minutes and upload aggregates, safe across threads."""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fleet_monitor.errors import InvalidInputError, LimitExceededError, UnknownDeviceError
from fleet_monitor.idempotency import HEARTBEAT, UPLOAD, Fingerprint, KeyMemory
from fleet_monitor.limits import UNLIMITED, UPLOAD_COST, HistoryBudget
from fleet_monitor.minutes import MinuteSet
from fleet_monitor.timestamps import minute_of
from fleet_monitor.uploads import UploadAggregate, UploadLog

if TYPE_CHECKING:
    from fleet_monitor.journal import Entry

DEVICE_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : -"
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


DOT_SEGMENT_RULE = "cannot be . or .. (clients normalise such path segments away)"


def device_id_problem(device_id: str) -> str | None:
    """What is wrong with ``device_id`` (a phrase to follow "must be" or "cannot be"), or None.

    An id is :data:`DEVICE_ID_RULE`, and not ``.`` or ``..``: an HTTP client removes those
    from a URL path, so a device with such an id could never be reached.
    """
    if _DEVICE_ID.fullmatch(device_id) is None:
        return f"must be {DEVICE_ID_RULE}"
    if device_id in (".", ".."):
        return DOT_SEGMENT_RULE
    return None


def is_valid_device_id(device_id: str) -> bool:
    """Whether ``device_id`` is a valid id (see :func:`device_id_problem`)."""
    return device_id_problem(device_id) is None


def check_device_id(device_id: str) -> str:
    """``device_id`` itself; raises InvalidInputError naming the rule when it breaks it."""
    if (problem := device_id_problem(device_id)) is not None:
        raise InvalidInputError(f"device_id {problem}", "invalid_device_id")
    return device_id


def uptime_percent(minutes_seen: int, first: int | None, last: int | None) -> float:
    """Uptime from the distinct heartbeat minutes and their span (the SPEC's formula).

    No minutes: 0.0. One minute (or all in one): 100.0. Otherwise
    ``min(100, 100 * minutes_seen / (last - first))``, unrounded.
    """
    if minutes_seen == 0 or first is None or last is None:
        return 0.0
    if last == first:
        return 100.0
    return min(100.0, 100 * minutes_seen / (last - first))


# (last heartbeat ns or None, uptime, upload count, sum, min, max); min and max are 0 when
# the count is.
Counters = tuple[int | None, float, int, int, int, int]


@dataclass(frozen=True)
class DeviceStats:
    """What ``GET /devices/{id}/stats`` reports."""

    uptime: float
    avg_upload_ns: int


@dataclass(frozen=True)
class DeviceSnapshot:
    """A consistent copy of one device's counters, taken under its lock."""

    device_id: str
    heartbeat_minutes: int
    first_minute: int | None
    last_minute: int | None
    first_heartbeat_ns: int | None
    last_heartbeat_ns: int | None
    uploads: UploadAggregate

    @property
    def uptime(self) -> float:
        """The SPEC's uptime of this device."""
        return uptime_percent(self.heartbeat_minutes, self.first_minute, self.last_minute)

    @property
    def avg_upload_ns(self) -> int:
        """The truncated mean upload time; 0 without uploads."""
        return self.uploads.avg_ns or 0


class ChangeLog(Protocol):
    """Where changes are written before they are applied (the journal)."""

    def append(
        self,
        kind: str,
        device_id: str,
        sent_at_ns: int | None = None,
        upload_ns: int | None = None,
        key: str | None = None,
    ) -> int:
        """Write one change; return its lsn. Raises if it could not be written."""


NO_BUDGET = HistoryBudget()  # unlimited; counts for nobody
_NO_MINUTES = MinuteSet()  # never added to: a record replaces it with its own first
_NO_UPLOADS = UploadLog()


class DeviceRecord:
    """One device's history: heartbeat minutes, first and last heartbeat, upload aggregates.

    Every method takes the record's own lock, held only for the update or copy itself.
    """

    __slots__ = (
        "_budget",
        "_journal",
        "_keys",
        "_lock",
        "applied_lsn",
        "device_id",
        "first_heartbeat_ns",
        "last_heartbeat_ns",
        "minutes",
        "removed",
        "upload_count",
        "upload_max_ns",
        "upload_min_ns",
        "upload_sum_ns",
        "uploads",
    )

    def __init__(
        self,
        device_id: str = "",
        journal: ChangeLog | None = None,
        budget: HistoryBudget = NO_BUDGET,
    ) -> None:
        self.device_id = device_id
        self._journal = journal
        self._budget = budget
        self.removed = False  # set when the fleet drops it: later writes are refused
        self.applied_lsn = 0  # the journal lsn of the latest change applied
        self._lock = threading.Lock()
        self._keys: KeyMemory | None = None  # created with the first key
        # Shared empty stand-ins until the first event: 100 000 never-seen devices then cost
        # a record and a lock each, not a bitmap and two arrays (start-up: 1.56 s -> see README).
        self.minutes = _NO_MINUTES
        self.first_heartbeat_ns: int | None = None
        self.last_heartbeat_ns: int | None = None
        self.uploads = _NO_UPLOADS
        self.upload_count = 0
        self.upload_sum_ns = 0
        self.upload_min_ns: int | None = None
        self.upload_max_ns: int | None = None

    def _is_repeat(self, kind: str, key: str | None, fingerprint: Fingerprint) -> bool:
        """Whether ``key`` already recorded this event (see :class:`KeyMemory`). Call under
        the lock; raises IdempotencyConflictError for a key used for another event."""
        return (
            key is not None
            and self._keys is not None
            and self._keys.is_repeat(kind, key, fingerprint)
        )

    def _remember(self, kind: str, key: str | None, fingerprint: Fingerprint) -> None:
        """Keep ``key`` among the device's latest. Call under the lock."""
        if key is None:
            return
        if self._keys is None:
            self._keys = KeyMemory()
        self._keys.remember(kind, key, fingerprint)

    def add_heartbeat(self, sent_at_ns: int, key: str | None = None) -> bool:
        """Record a heartbeat; return True if its minute was new for this device.

        A ``key`` that already recorded this heartbeat (among the device's last 1 024 keys)
        changes nothing; one that recorded a different heartbeat raises
        IdempotencyConflictError. A heartbeat past the history budget raises
        LimitExceededError. With a journal, the change is journaled first; if that fails
        (JournalError), nothing changes.
        """
        with self._lock:
            if self._is_repeat(HEARTBEAT, key, (sent_at_ns, None)):
                return False
            reserved = self._reserve(self.minutes.cost_of_adding(minute_of(sent_at_ns)))
            self._journaled(reserved, "h", sent_at_ns=sent_at_ns, key=key)
            new = self._apply_heartbeat(sent_at_ns, key)
            self._settle(reserved)
            return new

    def _reserve(self, extra: int) -> tuple[int, int]:
        """Check the record is still in the fleet and count ``extra`` bytes in the budget;
        return (cost before, extra) for :meth:`_settle`. Call under the lock."""
        if self.removed:
            raise UnknownDeviceError(self.device_id)
        before = self.cost()
        self._budget.reserve(before, extra)
        return before, extra

    def _journaled(self, reserved: tuple[int, int], kind: str, **fields: Any) -> None:
        """Journal a change (if journaling); on failure give the reservation back."""
        if self._journal is None:
            return
        try:
            self.applied_lsn = self._journal.append(kind, self.device_id, **fields)
        except Exception:
            self._budget.adjust(-reserved[1])
            raise

    def _settle(self, reserved: tuple[int, int]) -> None:
        """Correct the budget by what the change really cost (a chunk may have filled up)."""
        before, extra = reserved
        self._budget.adjust(self.cost() - before - extra)

    def cost(self) -> int:
        """Estimated bytes of history this record holds (the history budget's measure)."""
        return self.minutes.cost() + self.upload_count * UPLOAD_COST

    def _apply_heartbeat(self, sent_at_ns: int, key: str | None) -> bool:
        self._remember(HEARTBEAT, key, (sent_at_ns, None))
        if self.last_heartbeat_ns is None or sent_at_ns > self.last_heartbeat_ns:
            self.last_heartbeat_ns = sent_at_ns
        if self.first_heartbeat_ns is None or sent_at_ns < self.first_heartbeat_ns:
            self.first_heartbeat_ns = sent_at_ns
        if self.minutes is _NO_MINUTES:
            self.minutes = MinuteSet()
        return self.minutes.add(minute_of(sent_at_ns))

    def add_upload(self, sent_at_ns: int, upload_ns: int, key: str | None = None) -> bool:
        """Record one upload that took ``upload_ns`` nanoseconds, sent at ``sent_at_ns``.

        Returns False, changing nothing, when ``key`` already recorded this upload; raises
        IdempotencyConflictError when it recorded a different one.
        Budgeted and journaled first, as :meth:`add_heartbeat`.
        """
        with self._lock:
            if self._is_repeat(UPLOAD, key, (sent_at_ns, upload_ns)):
                return False
            reserved = self._reserve(UPLOAD_COST)
            self._journaled(reserved, "u", sent_at_ns=sent_at_ns, upload_ns=upload_ns, key=key)
            self._apply_upload(sent_at_ns, upload_ns, key)
            self._settle(reserved)
            return True

    def _apply_upload(self, sent_at_ns: int, upload_ns: int, key: str | None) -> None:
        self._remember(UPLOAD, key, (sent_at_ns, upload_ns))
        if self.uploads is _NO_UPLOADS:
            self.uploads = UploadLog()
        self.uploads.add(minute_of(sent_at_ns), upload_ns)
        self.upload_count += 1
        self.upload_sum_ns += upload_ns
        if self.upload_min_ns is None or upload_ns < self.upload_min_ns:
            self.upload_min_ns = upload_ns
        if self.upload_max_ns is None or upload_ns > self.upload_max_ns:
            self.upload_max_ns = upload_ns

    def replay(self, entry: Entry) -> None:
        """Apply a journaled change once: changes this record already holds are skipped."""
        with self._lock:
            if entry.lsn <= self.applied_lsn or entry.sent_at_ns is None:
                return
            self.applied_lsn = entry.lsn
            before = self.cost()  # counted, never refused: the change was accepted once
            if entry.kind == "h":
                self._apply_heartbeat(entry.sent_at_ns, entry.key)
            elif entry.kind == "u" and entry.upload_ns is not None:
                self._apply_upload(entry.sent_at_ns, entry.upload_ns, entry.key)
            self._budget.adjust(self.cost() - before)

    def export(self) -> dict[str, Any]:
        """The record's whole state as JSON-ready values (for a snapshot), copied under its lock."""
        with self._lock:
            return {
                "id": self.device_id,
                "lsn": self.applied_lsn,
                "first": self.first_heartbeat_ns,
                "last": self.last_heartbeat_ns,
                "minutes": self.minutes.export(),
                "uploads": self.uploads.export(),
                "count": self.upload_count,
                "sum": self.upload_sum_ns,
                "min": self.upload_min_ns,
                "max": self.upload_max_ns,
                "keys": self._keys.export() if self._keys else [],
            }

    @classmethod
    def restore(cls, state: dict[str, Any], budget: HistoryBudget = NO_BUDGET) -> DeviceRecord:
        """A record from :meth:`export`'s values, counted in ``budget``."""
        record = cls(state["id"], budget=budget)
        record.applied_lsn = state["lsn"]
        record.first_heartbeat_ns, record.last_heartbeat_ns = state["first"], state["last"]
        if state["minutes"]["count"]:
            record.minutes = MinuteSet.restore(state["minutes"])
        if state["count"]:
            record.uploads = UploadLog.restore(state["uploads"])
        record.upload_count, record.upload_sum_ns = state["count"], state["sum"]
        record.upload_min_ns, record.upload_max_ns = state["min"], state["max"]
        if state["keys"]:
            record._keys = KeyMemory.restore(state["keys"])
        budget.adjust(record.cost())
        return record

    def stats(self) -> DeviceStats:
        """Uptime and truncated mean upload time, in O(1)."""
        with self._lock:
            minutes = self.minutes
            uptime = uptime_percent(len(minutes), minutes.first, minutes.last)
            count, total = self.upload_count, self.upload_sum_ns
        return DeviceStats(uptime=uptime, avg_upload_ns=total // count if count else 0)

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """A consistent copy of the counters, in O(1)."""
        with self._lock:
            return DeviceSnapshot(
                device_id=device_id,
                heartbeat_minutes=len(self.minutes),
                first_minute=self.minutes.first,
                last_minute=self.minutes.last,
                first_heartbeat_ns=self.first_heartbeat_ns,
                last_heartbeat_ns=self.last_heartbeat_ns,
                uploads=UploadAggregate(
                    self.upload_count, self.upload_sum_ns, self.upload_min_ns, self.upload_max_ns
                ),
            )

    def counters(self) -> Counters:
        """Latest heartbeat, uptime and upload count, sum, min and max, in O(1)."""
        with self._lock:
            minutes = self.minutes
            return (
                self.last_heartbeat_ns,
                uptime_percent(len(minutes), minutes.first, minutes.last),
                self.upload_count,
                self.upload_sum_ns,
                self.upload_min_ns or 0,
                self.upload_max_ns or 0,
            )

    def heartbeat_minutes_between(self, start: int, end: int) -> int:
        """How many heartbeat minutes ``m`` with ``start <= m < end`` the device has."""
        with self._lock:
            return self.minutes.count_between(start, end)

    def uploads_between(self, start: int, end: int) -> UploadAggregate:
        """The upload aggregate of the minutes ``m`` with ``start <= m < end``."""
        with self._lock:
            return self.uploads.between(start, end)


class Fleet:
    """The devices being monitored, by id, with a sorted index for paging.

    With a journal attached, registrations and removals are journaled (under the fleet lock)
    before they take effect, and so is every record's change.
    """

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
        self._devices: dict[str, DeviceRecord] = {}
        self._sorted_ids: list[str] = []
        self._journal: ChangeLog | None = None
        self._registry_lsn = 0  # the lsn of the latest registration or removal
        self._removed: set[str] = set()  # removed at run time and not registered since
        self.add_all(device_ids)

    def add_all(self, device_ids: Iterable[str]) -> int:
        """Add each of ``device_ids`` not yet in the fleet (ids are not checked: they come from
        a validated file); return how many were new. Not journaled: the file is read again at
        each start."""
        with self._lock:
            before = len(self._devices)
            for device_id in device_ids:
                if device_id not in self._devices:
                    self._devices[device_id] = DeviceRecord(device_id, self._journal, self.budget)
            added = len(self._devices) - before
            if added:
                self._sorted_ids = sorted(self._devices)
            return added

    def attach_journal(self, journal: ChangeLog) -> None:
        """Journal every change from now on."""
        with self._lock:
            self._journal = journal
            for record in self._devices.values():
                record._journal = journal

    def was_removed(self, device_id: str) -> bool:
        """Whether ``device_id`` was removed at run time (and not registered again)."""
        return device_id in self._removed

    def restore(self, states: Iterable[dict[str, Any]], removed: Iterable[str], lsn: int) -> None:
        """Load a snapshot's devices, removed ids and registry lsn (before anything else)."""
        with self._lock:
            for state in states:
                record = DeviceRecord.restore(state, self.budget)
                self._devices[record.device_id] = record
            self._removed = set(removed)
            self._registry_lsn = lsn
            self._sorted_ids = sorted(self._devices)

    def registry_state(self) -> tuple[int, list[str], list[DeviceRecord]]:
        """The registry lsn, the removed ids and the records, copied under the fleet lock."""
        with self._lock:
            return self._registry_lsn, sorted(self._removed), list(self._devices.values())

    def replay(self, entry: Entry) -> None:
        """Apply one journaled change, unless the state already holds it."""
        if entry.kind in ("r", "x"):
            with self._lock:
                if entry.lsn <= self._registry_lsn:
                    return
                self._registry_lsn = entry.lsn
                if entry.kind == "r":
                    self._add(entry.device_id)
                else:
                    self._drop(entry.device_id)
            return
        record = self._devices.get(entry.device_id)
        if record is not None:  # else removed later on: the removal is replayed too
            record.replay(entry)

    def _add(self, device_id: str) -> bool:
        if device_id in self._devices:
            return False
        self._devices[device_id] = DeviceRecord(device_id, self._journal, self.budget)
        insort(self._sorted_ids, device_id)
        self._removed.discard(device_id)
        return True

    def _drop(self, device_id: str) -> bool:
        record = self._devices.pop(device_id, None)
        if record is None:
            return False
        with record._lock:  # a write racing the removal sees it, and is refused
            record.removed = True
            self.budget.adjust(-record.cost())
        del self._sorted_ids[bisect_left(self._sorted_ids, device_id)]
        self._removed.add(device_id)
        return True

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._devices))

    def get(self, device_id: str) -> DeviceRecord | None:
        """The record of ``device_id``, or None."""
        return self._devices.get(device_id)

    def device(self, device_id: str) -> DeviceRecord:
        """The record of ``device_id``; raises :class:`UnknownDeviceError`."""
        record = self._devices.get(device_id)
        if record is None:
            raise UnknownDeviceError(device_id)
        return record

    def register(self, device_id: str) -> bool:
        """Add ``device_id`` (checked against the id rule); return False if it was there.
        Raises LimitExceededError when the fleet already holds ``max_devices``."""
        check_device_id(device_id)
        with self._lock:
            if device_id in self._devices:
                return False
            if len(self._devices) >= self.max_devices:
                raise LimitExceededError(
                    f"the fleet holds {len(self._devices)} devices, the most allowed "
                    "(--max-devices)",
                    "fleet_full",
                )
            if self._journal is not None:
                self._registry_lsn = self._journal.append("r", device_id)
            return self._add(device_id)

    def remove(self, device_id: str) -> None:
        """Remove ``device_id`` and its history; raises :class:`UnknownDeviceError`."""
        with self._lock:
            if device_id not in self._devices:
                raise UnknownDeviceError(device_id)
            if self._journal is not None:
                self._registry_lsn = self._journal.append("x", device_id)
            self._drop(device_id)

    def ids_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` device ids in sorted order, each greater than ``after``.

        Paging by the last id seen never repeats an id, whatever is added or removed between
        two pages.
        """
        with self._lock:
            index = 0 if after is None else bisect_right(self._sorted_ids, after)
            return self._sorted_ids[index : index + count]

    def counters(self) -> Iterator[tuple[str, Counters]]:
        """Each device's id and :meth:`DeviceRecord.counters`, one record lock at a time."""
        with self._lock:  # held for the copy only, never while records are read
            records = list(self._devices.items())
        for device_id, record in records:
            yield device_id, record.counters()

    def record_heartbeat(self, device_id: str, sent_at_ns: int) -> bool:
        """Record a heartbeat; return True if its minute was new for the device."""
        return self.device(device_id).add_heartbeat(sent_at_ns)

    def record_upload(self, device_id: str, sent_at_ns: int, upload_ns: int) -> None:
        """Record one upload of ``upload_ns`` nanoseconds for the device."""
        self.device(device_id).add_upload(sent_at_ns, upload_ns)

    def stats(self, device_id: str) -> DeviceStats:
        """Uptime and average upload time of the device."""
        return self.device(device_id).stats()
