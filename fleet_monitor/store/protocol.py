"""The Store protocol: everything the HTTP layer asks of the fleet's state.

The memory store (:mod:`fleet_monitor.store.memory`) is its first implementation; any other
must answer every call the same way, raising the same domain errors, so that no code above
this seam changes with the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from fleet_monitor.domain.events import Event
from fleet_monitor.domain.maintenance import MaintenanceWindow
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.readmodels import FleetReads


class Store(FleetReads, Protocol):
    """The fleet's devices and their histories: the reads of :class:`FleetReads`, and these.

    Errors: UnknownDeviceError (no such device), InvalidInputError (a bad id),
    IdempotencyConflictError (a key reused for another event), LimitExceededError (a budget
    or the fleet's size), StoreUnavailableError (the change could not be stored: nothing
    changed).
    """

    def __contains__(self, device_id: object) -> bool:
        """Whether ``device_id`` is in the fleet."""

    def __len__(self) -> int:
        """How many devices the fleet holds."""

    def add_all(self, device_ids: Iterable[str]) -> int:
        """Add the devices of a devices file that the fleet neither holds nor removed at run
        time (unchecked: the file was validated); return how many were new."""

    def register(self, device_id: str) -> bool:
        """Add ``device_id``; return False if it was there already."""

    def remove(self, device_id: str) -> None:
        """Remove ``device_id`` and its whole history."""

    def set_profile(self, device_id: str, profile: Profile) -> None:
        """Give ``device_id`` ``profile`` (labels, its own expectations)."""

    def apply_file_profiles(self, profiles: Mapping[str, Profile]) -> int:
        """Give each device its devices-file profile unless the API set one; how many
        changed."""

    def add_maintenance(self, window: MaintenanceWindow) -> None:
        """Keep a maintenance window; LimitExceededError past MAX_WINDOWS."""

    def remove_maintenance(self, window_id: str) -> bool:
        """Drop a maintenance window; False if there was none of that id."""

    def record(self, device_id: str, event: Event, key: str | None, *, wait: bool = True) -> bool:
        """Record ``event`` once per ``key``; return False for a repeat, and for a heartbeat
        whose minute the device already had. With ``wait=False`` the change may not be durable
        yet on return; :meth:`flush` waits for every such change."""

    def record_many(self, events: Sequence[tuple[str, Event]]) -> list[bool | Exception]:
        """Record each ``(device id, event)``, without keys, not waiting for durability (see
        :meth:`flush`); for each, what :meth:`record` returns or the refusal it raised
        (UnknownDeviceError, LimitExceededError, StoreUnavailableError). A store that sends
        them together may raise StoreUnavailableError for all of them."""

    def flush(self) -> None:
        """Wait until every change recorded so far is durable."""

    def history_bytes(self) -> int:
        """Estimated bytes of history the fleet holds (see the history budget)."""

    def problem(self) -> str | None:
        """Why changes cannot be stored now (``/readyz`` then answers degraded), or None."""
