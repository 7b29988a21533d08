"""Bounds on what clients can make the service hold or compute, each with a clear refusal.

- :class:`HistoryBudget`: estimated bytes of history (heartbeat bitmaps, uploads) per device
  and for the whole fleet; a write past either is refused with LimitExceededError (422).
- :class:`SentAtRange`: optionally, how far a ``sent_at`` may be from the server's clock.
"""

from __future__ import annotations

import sys
import threading

from fleet_monitor.domain.errors import LimitExceededError
from fleet_monitor.domain.timestamps import NS_PER_SECOND

UPLOAD_COST = 16  # bytes an upload holds: its minute and its time, two int64
UNLIMITED = sys.maxsize


def device_history_full(held: int, most: int) -> LimitExceededError:
    """The refusal of a write past one device's history budget."""
    return LimitExceededError(
        f"this device's history is full: it holds about {held} bytes, and at most {most} are "
        "allowed (--max-device-bytes)",
        "device_budget",
    )


def fleet_history_full(held: int, most: int) -> LimitExceededError:
    """The refusal of a write past the fleet's history budget."""
    return LimitExceededError(
        f"the fleet's history is full: it holds about {held} bytes, and at most {most} are "
        "allowed (--max-fleet-bytes)",
        "fleet_budget",
    )


def fleet_full(devices: int) -> LimitExceededError:
    """The refusal of a registration past ``--max-devices``."""
    return LimitExceededError(
        f"the fleet holds {devices} devices, the most allowed (--max-devices)", "fleet_full"
    )


def windows_full(windows: int) -> LimitExceededError:
    """The refusal of a maintenance window past the most the fleet keeps."""
    return LimitExceededError(
        f"the fleet has {windows} maintenance windows, the most allowed: delete some first",
        "too_many_windows",
    )


class HistoryBudget:
    """How many estimated bytes of history one device, and the fleet, may hold; safe across
    threads. Records :meth:`reserve` before a write and :meth:`adjust` after it."""

    def __init__(self, per_device: int = UNLIMITED, fleet: int = UNLIMITED) -> None:
        self.per_device, self.fleet = per_device, fleet
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Estimated bytes of history the fleet holds."""
        return self._used

    def reserve(self, device_cost: int, extra: int) -> None:
        """Count ``extra`` bytes more for a device holding ``device_cost``; raises
        LimitExceededError, counting nothing, when that passes either budget."""
        if extra <= 0:
            return
        if device_cost + extra > self.per_device:
            raise device_history_full(device_cost, self.per_device)
        with self._lock:
            if self._used + extra > self.fleet:
                raise fleet_history_full(self._used, self.fleet)
            self._used += extra

    def adjust(self, delta: int) -> None:
        """Count ``delta`` bytes more (or fewer), without any check: a correction after a
        write, a refused write's reservation given back, a restored or removed record."""
        if delta:
            with self._lock:
                self._used += delta


class SentAtRange:
    """How far before (``max_age_s``) or after (``max_lead_s``) the server's clock a
    ``sent_at`` may be; 0 leaves that side open (the SPEC accepts years 1 to 9999)."""

    def __init__(self, max_age_s: int = 0, max_lead_s: int = 0) -> None:
        self.max_age_s, self.max_lead_s = max_age_s, max_lead_s

    @property
    def is_open(self) -> bool:
        """Whether every ``sent_at`` is accepted."""
        return not (self.max_age_s or self.max_lead_s)

    def check(self, sent_at_ns: int, now_ns: int) -> None:
        """Raise LimitExceededError when ``sent_at_ns`` is outside the range around ``now_ns``
        (to the nanosecond: 3600.5 s is more than 3600 s)."""
        for off_ns, most_s, side, flag in (
            (now_ns - sent_at_ns, self.max_age_s, "before", "age"),
            (sent_at_ns - now_ns, self.max_lead_s, "after", "lead"),
        ):
            if most_s and off_ns > most_s * NS_PER_SECOND:
                off = f"{off_ns / NS_PER_SECOND:.3f}".rstrip("0").rstrip(".")
                raise LimitExceededError(
                    f"sent_at is {off} s {side} the server's clock; at most {most_s} s is "
                    f"accepted (--max-sent-at-{flag})",
                    "sent_at_out_of_range",
                )
