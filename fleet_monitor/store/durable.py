"""The memory store's durable state in a directory: load the snapshot, replay the journal,
snapshot periodically.

Start-up: read ``snapshot.jsonl`` (if any), add the CSV's devices that the state does not hold
and did not remove at run time, replay every journal segment in order (skipping what the
snapshot already holds, by lsn), then open a fresh segment for new writes. A snapshot rotates
the journal first, copies each device under its own lock, and deletes the older segments once
the snapshot is safely renamed into place. The journal's record kinds (one letter each) are
this module's concern: the store speaks of events and registry changes.
"""

from __future__ import annotations

import binascii
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fleet_monitor.domain.events import HEARTBEAT, UPLOAD, Event, Heartbeat, Upload
from fleet_monitor.domain.history import DeviceHistory
from fleet_monitor.domain.maintenance import MaintenanceWindow
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.store.codec import decode_device, encode_device
from fleet_monitor.store.journal import Entry, Journal, JournalError, read_segment, segments
from fleet_monitor.store.journal_format import first_lsn
from fleet_monitor.store.memory import (
    MAINTAINED,
    PROFILED,
    REGISTERED,
    REMOVED,
    UNMAINTAINED,
    Device,
    MemoryStore,
)
from fleet_monitor.store.snapshot import (
    PREVIOUS_FILE,
    Snapshot,
    SnapshotError,
    read_snapshot,
    set_aside_damaged,
    write_snapshot,
)

log = logging.getLogger(__name__)


class StateError(Exception):
    """The state directory cannot be used; str() names it and why."""


# The journal's letter for each change the store makes.
_LETTERS = {
    HEARTBEAT: "h",
    UPLOAD: "u",
    REGISTERED: "r",
    REMOVED: "x",
    PROFILED: "p",
    MAINTAINED: "m",
    UNMAINTAINED: "n",
}


class JournalChanges:
    """The store's :class:`~fleet_monitor.store.memory.ChangeLog` over a :class:`Journal`."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def append(self, kind: str, device_id: str, event: Event | None, key: str | None) -> int:
        """Write one change to the journal (not waiting for its fsync: see :meth:`durable`);
        raises JournalError (a StoreUnavailableError)."""
        if kind in (PROFILED, MAINTAINED, UNMAINTAINED):  # ``key``: its JSON, or None
            return self.journal.append(_LETTERS[kind], device_id, detail=key, wait=False)
        sent_at_ns = None if event is None else event.sent_at_ns
        upload_ns = event.upload_time_ns if isinstance(event, Upload) else None
        received_ns = event.received_ns if isinstance(event, Heartbeat) else None
        return self.journal.append(
            _LETTERS[kind],
            device_id,
            sent_at_ns,
            upload_ns,
            key,
            received_ns=received_ns,
            wait=False,
        )

    def durable(self, lsn: int) -> None:
        """Wait until change ``lsn`` is as durable as ``--fsync`` promises."""
        self.journal.wait_durable(lsn)

    def flush(self) -> None:
        """Wait until every change written so far is as durable as ``--fsync`` promises."""
        self.journal.wait_durable(self.journal.next_lsn - 1)

    def problem(self) -> str | None:
        """Why the journal cannot take writes now, or None (see JournalHealth)."""
        return self.journal.health.problem()


def replay(store: MemoryStore, entry: Entry) -> None:
    """Apply one journaled change to ``store``, unless the state already holds it."""
    if entry.kind in ("r", "x"):
        if entry.lsn > store.registry_lsn:
            store.registry_lsn = entry.lsn
            if entry.kind == "r":
                store.apply_registration(entry.device_id, entry.lsn)
            else:
                store.apply_removal(entry.device_id)
        return
    if entry.kind in ("m", "n"):  # device_id holds the window's id
        window = MaintenanceWindow.loads(entry.detail or "") if entry.kind == "m" else None
        store.replay_window(entry.lsn, entry.device_id, window)
        return
    if entry.kind == "p":
        store.replay_profile(entry.lsn, entry.device_id, Profile.from_json(entry.detail))
        return
    if entry.sent_at_ns is None:
        return
    event: Event = (
        Heartbeat(entry.sent_at_ns, entry.received_ns)
        if entry.kind == "h"
        else Upload(entry.sent_at_ns, entry.upload_ns or 0)
    )
    store.replay(entry.lsn, entry.device_id, event, entry.key)


class DurableStore:
    """The store's state directory; :meth:`open` fills the store, :meth:`close` snapshots it."""

    def __init__(self, directory: Path, fsync: str, snapshot_every: int) -> None:
        self.directory = directory
        self._fsync = fsync
        self._snapshot_every = snapshot_every
        self._journal: Journal | None = None
        self._store: MemoryStore | None = None
        self._snapshot_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._covered = 1  # the lsn the previous snapshot on disk (or none) starts replay at

    def open(self, store: MemoryStore, csv_ids: Iterable[str], *, repair: bool = False) -> None:
        """Fill ``store`` from the directory and the CSV, then journal its changes."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._open(store, csv_ids, repair=repair)
        except OSError as error:
            raise StateError(
                f"{self.directory}: cannot use the data directory: {error.strerror or error}"
            ) from None

    def _open(self, store: MemoryStore, csv_ids: Iterable[str], *, repair: bool) -> None:
        started = time.perf_counter()
        snapshot, decoded = self._load_snapshot(repair=repair)
        next_lsn = 1
        for device in decoded:
            store.restore(*device)
        if snapshot is not None:
            store.removed, store.registry_lsn = set(snapshot.removed), snapshot.registry_lsn
            store.apply_windows(MaintenanceWindow.loads(text) for text in snapshot.maintenance)
            next_lsn = self._covered = snapshot.next_lsn
        found = segments(self.directory)
        if found and first_lsn(found[0]) > next_lsn:
            raise StateError(
                f"{self.directory}: the journal starts at lsn {first_lsn(found[0])} but the "
                f"snapshot needs it from lsn {next_lsn}: changes are missing"
            )
        store.add_all(csv_ids)  # not those removed at run time
        replayed = 0
        for index, path in enumerate(found):
            last = index == len(found) - 1
            following = None if last else first_lsn(found[index + 1])
            for entry in read_segment(path, last=last, repair=repair, next_lsn=following):
                if entry.lsn < self._covered:
                    continue  # the snapshot holds it (the journal before it is kept)
                replay(store, entry)
                replayed += 1
                next_lsn = max(next_lsn, entry.lsn + 1)
        journal = Journal(self.directory, next_lsn, self._fsync)
        store.attach_journal(JournalChanges(journal))
        self._store = store
        self._journal = journal  # last: close() snapshots only a store fully loaded
        log.info(
            "state loaded from %s: %d devices from the snapshot, %d journal records replayed "
            "in %.2f s",
            self.directory,
            len(snapshot.devices) if snapshot else 0,
            replayed,
            time.perf_counter() - started,
            extra={"fields": {"replayed": replayed}},
        )
        if self._snapshot_every:
            thread = threading.Thread(target=self._snapshot_loop, name="snapshot", daemon=True)
            thread.start()

    def _load_snapshot(
        self, *, repair: bool
    ) -> tuple[Snapshot | None, list[tuple[str, int, DeviceHistory]]]:
        """The newest snapshot and its devices decoded; with ``repair``, a damaged one is set
        aside for the previous one (the journal after it is kept for that). Raises
        SnapshotError."""
        try:
            snapshot = read_snapshot(self.directory)
            return snapshot, _decoded(snapshot)
        except SnapshotError as error:
            if not repair:
                raise SnapshotError(f"{error} (start with --repair to fall back)") from None
            fallback = read_snapshot(self.directory, PREVIOUS_FILE)
            found = segments(self.directory)
            if fallback is None and (not found or first_lsn(found[0]) != 1):
                raise SnapshotError(
                    f"{error}; there is no previous snapshot and the journal does not reach back "
                    "to the first change"
                ) from None
            damaged = set_aside_damaged(self.directory)
            log.warning(
                "%s; set aside as %s, starting from %s and the journal",
                error,
                damaged.name,
                PREVIOUS_FILE if fallback else "nothing",
            )
            return fallback, _decoded(fallback)

    def snapshot(self) -> int:
        """Write a snapshot of the fleet and drop the journal segments it covers.

        Holds no lock a write needs: the journal's only for its rotation (no fsync), each
        record's only for its copy. Raises OSError (or JournalError once closed).
        """
        assert self._journal is not None and self._store is not None, "open() first"
        with self._snapshot_lock:
            if self._closed:
                raise JournalError("cannot snapshot: the state is closed")
            started = time.perf_counter()
            older = self._journal.rotate()
            next_lsn = self._journal.next_lsn
            registry_lsn, removed, devices, windows = self._store.fleet_state()
            count = write_snapshot(
                self.directory,
                next_lsn,
                registry_lsn,
                removed,
                _encoded(devices),
                maintenance=windows,
            )
            dropped = _covered_by(older, next_lsn, self._covered)
            for path in dropped:
                path.unlink()
            self._covered = next_lsn
            log.info(
                "snapshot of %d devices written in %.2f s; %d journal segments dropped",
                count,
                time.perf_counter() - started,
                len(dropped),
                extra={"fields": {"snapshot_devices": count}},
            )
            return count

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self._snapshot_every):
            try:
                self.snapshot()
            except (OSError, JournalError) as error:
                if self._closed:
                    return  # closed meanwhile: the last snapshot was taken
                log.error(
                    "periodic snapshot failed; the journal keeps every change: %s",
                    getattr(error, "strerror", None) or error,
                )

    def close(self) -> None:
        """A last snapshot (so the next start replays nothing), then close the journal; a
        second call does nothing."""
        self._stop.set()
        if self._journal is None or self._closed:
            return
        try:
            self.snapshot()
        except OSError:
            log.exception("the last snapshot failed; the journal still holds every change")
        with self._snapshot_lock:
            self._closed = True
        try:
            self._journal.close()
        except JournalError as error:
            log.error("%s on close; a power cut could lose the last second of changes", error)


def _decoded(snapshot: Snapshot | None) -> list[tuple[str, int, DeviceHistory]]:
    """Every device of ``snapshot`` decoded; raises SnapshotError naming the bad one."""
    decoded = []
    for number, state in enumerate(snapshot.devices if snapshot else [], start=2):
        try:
            decoded.append(decode_device(state))
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as error:
            raise SnapshotError(f"snapshot line {number}: not a device ({error!r})") from None
    return decoded


def _covered_by(older: list[Path], current: int, covered: int) -> list[Path]:
    """The segments (oldest first; the current one starts at lsn ``current``) that hold only
    changes before lsn ``covered``: the previous snapshot holds them too, so a fall back to it
    still finds the journal it needs."""
    following = [first_lsn(path) for path in older[1:]] + [current]
    return [path for path, after in zip(older, following, strict=False) if after <= covered]


def _encoded(devices: list[tuple[str, Device]]) -> Iterator[dict[str, Any]]:
    """Each device's snapshot values, copied under its own lock, one at a time; the lock is
    released before the values are written (a slow disk never holds a device's writes)."""
    for device_id, device in devices:
        with device.lock:
            state = encode_device(device_id, device.lsn, device.history)
        yield state
