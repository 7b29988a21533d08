"""The Store protocol: everything the HTTP layer asks of the fleet's state.

The memory store (:mod:`fleet_monitor.store.memory`) is its first implementation; any other
must answer every call the same way, raising the same domain errors, so that no code above
this seam changes with the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from fleet_monitor.domain.events import Event
from fleet_monitor.domain.history import DeviceSnapshot
from fleet_monitor.domain.readmodels import FleetReads
from fleet_monitor.domain.uploads import UploadAggregate


class Store(FleetReads, Protocol):
    """The fleet's devices and their histories.

    Errors: UnknownDeviceError (no such device), InvalidInputError (a bad id),
    IdempotencyConflictError (a key reused for another event), LimitExceededError (a budget
    or the fleet's size), StoreUnavailableError (the change could not be stored: nothing
    changed).
    """

    def __contains__(self, device_id: object) -> bool:
        """Whether ``device_id`` is in the fleet."""

    def __len__(self) -> int:
        """How many devices the fleet holds."""

    def register(self, device_id: str) -> bool:
        """Add ``device_id``; return False if it was there already."""

    def remove(self, device_id: str) -> None:
        """Remove ``device_id`` and its whole history."""

    def record(self, device_id: str, event: Event, key: str | None) -> bool:
        """Record ``event`` once per ``key``; return False for a repeat, and for a heartbeat
        whose minute the device already had."""

    def ids_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` ids in sorted order, each greater than ``after``."""

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """One device's counters, in O(1)."""

    def snapshots(self) -> Iterator[DeviceSnapshot]:
        """Every device's counters (for fleet summaries and metrics)."""

    def heartbeat_counts(self, device_id: str, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """For each ``(start, end)``, how many heartbeat minutes ``start <= m < end``."""

    def upload_aggregates(
        self, device_id: str, ranges: Sequence[tuple[int, int]]
    ) -> list[UploadAggregate]:
        """For each ``(start, end)``, the uploads of minutes ``start <= m < end``."""

    def history_bytes(self) -> int:
        """Estimated bytes of history the fleet holds (see the history budget)."""

    def problem(self) -> str | None:
        """Why changes cannot be stored now (``/readyz`` then answers degraded), or None."""
