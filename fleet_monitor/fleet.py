"""The fleet: each device's heartbeat minutes and upload counters, safe across threads."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fleet_monitor.minutes import MinuteSet
from fleet_monitor.timestamps import minute_of

DEVICE_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : -"
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


def is_valid_device_id(device_id: str) -> bool:
    """Whether ``device_id`` follows :data:`DEVICE_ID_RULE`."""
    return _DEVICE_ID.fullmatch(device_id) is not None


class UnknownDeviceError(LookupError):
    """The device id is not in the fleet."""


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


@dataclass(frozen=True)
class DeviceStats:
    """What ``GET /devices/{id}/stats`` reports."""

    uptime: float
    avg_upload_ns: int


class DeviceRecord:
    """One device's history: its heartbeat minutes and upload count and sum.

    Every method takes the record's own lock, held only for the update itself.
    """

    __slots__ = ("_lock", "minutes", "upload_count", "upload_sum_ns")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.minutes = MinuteSet()
        self.upload_count = 0
        self.upload_sum_ns = 0

    def add_heartbeat(self, sent_at_ns: int) -> bool:
        """Record a heartbeat; return True if its minute was new for this device."""
        minute = minute_of(sent_at_ns)
        with self._lock:
            return self.minutes.add(minute)

    def add_upload(self, upload_ns: int) -> None:
        """Record one upload that took ``upload_ns`` nanoseconds."""
        with self._lock:
            self.upload_count += 1
            self.upload_sum_ns += upload_ns

    def stats(self) -> DeviceStats:
        """Uptime and truncated mean upload time, in O(1)."""
        with self._lock:
            minutes = self.minutes
            uptime = uptime_percent(len(minutes), minutes.first, minutes.last)
            count, total = self.upload_count, self.upload_sum_ns
        return DeviceStats(uptime=uptime, avg_upload_ns=total // count if count else 0)


class Fleet:
    """The devices being monitored, by id."""

    def __init__(self, device_ids: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceRecord] = {}
        for device_id in device_ids:
            self._devices.setdefault(device_id, DeviceRecord())

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._devices))

    def device(self, device_id: str) -> DeviceRecord:
        """The record of ``device_id``; raises :class:`UnknownDeviceError`."""
        record = self._devices.get(device_id)
        if record is None:
            raise UnknownDeviceError(device_id)
        return record

    def record_heartbeat(self, device_id: str, sent_at_ns: int) -> bool:
        """Record a heartbeat; return True if its minute was new for the device."""
        return self.device(device_id).add_heartbeat(sent_at_ns)

    def record_upload(self, device_id: str, upload_ns: int) -> None:
        """Record one upload of ``upload_ns`` nanoseconds for the device."""
        self.device(device_id).add_upload(upload_ns)

    def stats(self, device_id: str) -> DeviceStats:
        """Uptime and average upload time of the device."""
        return self.device(device_id).stats()
