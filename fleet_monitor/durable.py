"""Durable state in a directory: load the snapshot, replay the journal, snapshot periodically.

Start-up: read ``snapshot.jsonl`` (if any), add the CSV's devices that the state does not hold
and did not remove at run time, replay every journal segment in order (skipping what the
snapshot already holds, by lsn), then open a fresh segment for new writes. A snapshot rotates
the journal first, copies each record under its own lock, and deletes the older segments once
the snapshot is safely renamed into place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from fleet_monitor.fleet import Fleet
from fleet_monitor.journal import Journal, JournalError, read_segment, segments
from fleet_monitor.journal_format import first_lsn
from fleet_monitor.snapshot import read_snapshot, write_snapshot

log = logging.getLogger(__name__)


class StateError(Exception):
    """The state directory cannot be used; str() names it and why."""


class DurableStore:
    """The fleet's state directory; :meth:`open` gives the fleet, :meth:`close` snapshots it."""

    def __init__(self, directory: Path, fsync: str, snapshot_every: int) -> None:
        self.directory = directory
        self._fsync = fsync
        self._snapshot_every = snapshot_every
        self._journal: Journal | None = None
        self._fleet: Fleet | None = None
        self._snapshot_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False

    def open(self, fleet: Fleet, csv_ids: Iterable[str], *, repair: bool = False) -> None:
        """Fill ``fleet`` from the directory and the CSV, then journal its changes."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._open(fleet, csv_ids, repair=repair)
        except OSError as error:
            raise StateError(
                f"{self.directory}: cannot use the data directory: {error.strerror or error}"
            ) from None

    def _open(self, fleet: Fleet, csv_ids: Iterable[str], *, repair: bool) -> None:
        started = time.perf_counter()
        snapshot = read_snapshot(self.directory)
        next_lsn = 1
        if snapshot is not None:
            fleet.restore(snapshot.devices, snapshot.removed, snapshot.registry_lsn)
            next_lsn = snapshot.next_lsn
        fleet.add_all(device_id for device_id in csv_ids if not fleet.was_removed(device_id))
        replayed = 0
        found = segments(self.directory)
        for index, path in enumerate(found):
            last = index == len(found) - 1
            following = None if last else first_lsn(found[index + 1])
            for entry in read_segment(path, last=last, repair=repair, next_lsn=following):
                fleet.replay(entry)
                replayed += 1
                next_lsn = max(next_lsn, entry.lsn + 1)
        self._journal = Journal(self.directory, next_lsn, self._fsync)
        fleet.attach_journal(self._journal)
        self._fleet = fleet
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

    def snapshot(self) -> int:
        """Write a snapshot of the fleet and drop the journal segments it covers.

        Holds no lock a write needs: the journal's only for its rotation (no fsync), each
        record's only for its copy. Raises OSError (or JournalError once closed).
        """
        assert self._journal is not None and self._fleet is not None, "open() first"
        with self._snapshot_lock:
            if self._closed:
                raise JournalError("cannot snapshot: the state is closed")
            started = time.perf_counter()
            older = self._journal.rotate()
            next_lsn = self._journal.next_lsn
            registry_lsn, removed, records = self._fleet.registry_state()
            count = write_snapshot(
                self.directory,
                next_lsn,
                registry_lsn,
                removed,
                (record.export() for record in records),
            )
            for path in older:
                path.unlink()
            log.info(
                "snapshot of %d devices written in %.2f s; %d journal segments dropped",
                count,
                time.perf_counter() - started,
                len(older),
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
