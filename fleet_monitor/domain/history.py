"""One device's history (heartbeat minutes, uploads, idempotency keys) and its read model.

:class:`DeviceHistory` is plain state with the rules of a write: a key's repeat or conflict,
what a write costs, how it changes the counters. It holds no lock and knows no storage: the
memory store serialises each device's writes and journals them around these calls.
:class:`DeviceSnapshot` is the one projection every read is made from.
"""

from __future__ import annotations

from typing import NamedTuple

from fleet_monitor.domain.bitmaps import MinuteSet
from fleet_monitor.domain.events import Event, Heartbeat
from fleet_monitor.domain.idempotency import KeyMemory, key_cost
from fleet_monitor.domain.limits import UPLOAD_COST
from fleet_monitor.domain.profiles import EMPTY, Profile
from fleet_monitor.domain.timestamps import minute_of
from fleet_monitor.domain.uploads import UploadAggregate, UploadLog
from fleet_monitor.domain.uptime import uptime_percent


class DeviceHead(NamedTuple):
    """What a device's state is judged on: when its latest heartbeat was received (or, from
    before receipts were kept, sent), and its profile; and how far its clock was off then."""

    device_id: str
    seen_ns: int | None
    profile: Profile
    skew_ns: int | None = None  # that heartbeat's sent_at less its arrival
    upload_count: int = 0
    upload_sum_ns: int = 0

    @staticmethod
    def of(device_id: str, history: DeviceHistory | DeviceSnapshot) -> DeviceHead:
        """The head of a device's history or snapshot: judged on when its latest heartbeat
        was received, else (kept from before receipts were recorded) on its ``sent_at``."""
        seen, sent = history.last_received_ns, history.last_received_sent_ns
        return DeviceHead(
            device_id,
            history.last_heartbeat_ns if seen is None else seen,
            history.profile,
            None if seen is None or sent is None else sent - seen,
            history.upload_count,
            history.upload_sum_ns,
        )


class DeviceSnapshot(NamedTuple):
    """A consistent copy of one device's counters: what every read is computed from."""

    device_id: str
    heartbeat_minutes: int
    first_minute: int | None
    last_minute: int | None
    first_heartbeat_ns: int | None
    last_heartbeat_ns: int | None
    upload_count: int
    upload_sum_ns: int
    upload_min_ns: int | None
    upload_max_ns: int | None
    last_received_ns: int | None = None  # when the service received the latest heartbeat
    last_received_sent_ns: int | None = None  # that heartbeat's sent_at
    profile: Profile = EMPTY  # labels and the device's own expectations

    @property
    def clock_skew_ns(self) -> int | None:
        """How far ahead of the service's clock the device's clock was at its latest
        heartbeat (negative: behind, or the heartbeat was late); None without one."""
        if self.last_received_ns is None or self.last_received_sent_ns is None:
            return None
        return self.last_received_sent_ns - self.last_received_ns

    @property
    def uptime(self) -> float:
        """The SPEC's uptime of this device."""
        return uptime_percent(self.heartbeat_minutes, self.first_minute, self.last_minute)

    @property
    def avg_upload_ns(self) -> int:
        """The truncated mean upload time; 0 without uploads."""
        return self.upload_sum_ns // self.upload_count if self.upload_count else 0

    @property
    def uploads(self) -> UploadAggregate:
        """Count, sum, min and max of every upload."""
        return UploadAggregate(
            self.upload_count, self.upload_sum_ns, self.upload_min_ns, self.upload_max_ns
        )


_NO_MINUTES = MinuteSet()  # never added to: a history replaces it with its own first
_NO_UPLOADS = UploadLog()


class DeviceHistory:
    """Heartbeat minutes, first and last heartbeat, uploads and their totals, recent keys.

    Not thread-safe: the owner serialises writes and reads of one history.
    """

    __slots__ = (
        "first_heartbeat_ns",
        "keys",
        "last_heartbeat_ns",
        "last_received_ns",
        "last_received_sent_ns",
        "minutes",
        "profile",
        "upload_count",
        "upload_max_ns",
        "upload_min_ns",
        "upload_sum_ns",
        "uploads",
    )

    def __init__(self) -> None:
        # Shared empty stand-ins until the first event: 100 000 never-seen devices then cost
        # a history each, not a bitmap and two arrays.
        self.minutes = _NO_MINUTES
        self.uploads = _NO_UPLOADS
        self.keys: KeyMemory | None = None  # created with the first key
        self.first_heartbeat_ns: int | None = None
        self.last_heartbeat_ns: int | None = None
        self.upload_count = 0
        self.upload_sum_ns = 0
        self.upload_min_ns: int | None = None
        self.upload_max_ns: int | None = None
        self.last_received_ns: int | None = None
        self.last_received_sent_ns: int | None = None
        self.profile = EMPTY

    def is_repeat(self, event: Event, key: str | None) -> bool:
        """Whether ``key`` already recorded ``event`` (then nothing is to change); raises
        IdempotencyConflictError when it recorded a different event of the same kind."""
        return (
            key is not None
            and self.keys is not None
            and self.keys.is_repeat(event.kind, key, event.fingerprint)
        )

    def growth(self, event: Event, key: str | None) -> int:
        """How much :meth:`cost` grows at most when ``event`` is applied with ``key``."""
        grows = 0 if key is None else key_cost(event.kind, key)
        if isinstance(event, Heartbeat):
            return grows + self.minutes.cost_of_adding(minute_of(event.sent_at_ns))
        return grows + UPLOAD_COST

    def apply(self, event: Event, key: str | None) -> bool:
        """Record ``event`` (and its key); for a heartbeat, return whether its minute was new."""
        if key is not None:
            if self.keys is None:
                self.keys = KeyMemory()
            self.keys.remember(event.kind, key, event.fingerprint)
        if isinstance(event, Heartbeat):
            self.note_receipt(event)
            return self._apply_heartbeat(event.sent_at_ns)
        self._apply_upload(event.sent_at_ns, event.upload_time_ns)
        return True

    def note_receipt(self, heartbeat: Heartbeat) -> None:
        """Remember when ``heartbeat`` was received, if it is the latest received (a retry
        of an idempotency key already recorded is not applied, so not noted)."""
        received = heartbeat.received_ns
        if received is not None and (
            self.last_received_ns is None or received >= self.last_received_ns
        ):
            self.last_received_ns, self.last_received_sent_ns = received, heartbeat.sent_at_ns

    def _apply_heartbeat(self, sent_at_ns: int) -> bool:
        if self.last_heartbeat_ns is None or sent_at_ns > self.last_heartbeat_ns:
            self.last_heartbeat_ns = sent_at_ns
        if self.first_heartbeat_ns is None or sent_at_ns < self.first_heartbeat_ns:
            self.first_heartbeat_ns = sent_at_ns
        if self.minutes is _NO_MINUTES:
            self.minutes = MinuteSet()
        return self.minutes.add(minute_of(sent_at_ns))

    def _apply_upload(self, sent_at_ns: int, upload_ns: int) -> None:
        if self.uploads is _NO_UPLOADS:
            self.uploads = UploadLog()
        self.uploads.add(minute_of(sent_at_ns), upload_ns)
        self.upload_count += 1
        self.upload_sum_ns += upload_ns
        if self.upload_min_ns is None or upload_ns < self.upload_min_ns:
            self.upload_min_ns = upload_ns
        if self.upload_max_ns is None or upload_ns > self.upload_max_ns:
            self.upload_max_ns = upload_ns

    def cost(self) -> int:
        """Estimated bytes of memory this history holds (the history budget's measure): its
        bitmap chunks, its uploads and its remembered idempotency keys."""
        keys = 0 if self.keys is None else self.keys.cost
        return self.minutes.cost() + self.upload_count * UPLOAD_COST + keys

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """The history's counters, in O(1)."""
        minutes = self.minutes
        return DeviceSnapshot(
            device_id,
            len(minutes),
            minutes.first,
            minutes.last,
            self.first_heartbeat_ns,
            self.last_heartbeat_ns,
            self.upload_count,
            self.upload_sum_ns,
            self.upload_min_ns,
            self.upload_max_ns,
            self.last_received_ns,
            self.last_received_sent_ns,
            self.profile,
        )
