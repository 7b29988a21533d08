"""The journal: every accepted change, appended before its reply, replayed at start-up.

The files' format and how damage is read back are in :mod:`fleet_monitor.store.journal_format`
(re-exported here). This module writes: :class:`Journal`.

Concurrency: ``Journal._lock`` guards the current segment, the lsn counter and the list of
retired segments. It is held for one ``os.write`` or a segment switch (open a file, write
its 4 magic bytes), never for an fsync and never while waiting for one. Durability is
tracked by lsn, not by bytes: ``_durable_lsn`` is the highest lsn known fsynced. One thread
at a time (the "syncer", under ``_sync_cond``) takes what is pending under ``_lock``, then,
with no lock held, fsyncs the retired segments (and closes them), the directory when a
segment was created since, and the current segment, and only then raises ``_durable_lsn``.
Threads needing a later lsn wait for it and share its next fsync (group commit).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from fleet_monitor.domain.errors import StoreUnavailableError
from fleet_monitor.store.journal_format import (
    MAGIC,
    CorruptJournalError,
    Entry,
    encode,
    fsync_directory,
    read_segment,
    segment_path,
    segments,
)
from fleet_monitor.store.journal_health import JournalHealth

__all__ = [
    "FSYNC_MODES",
    "MAGIC",
    "CorruptJournalError",
    "Entry",
    "Journal",
    "JournalError",
    "encode",
    "read_segment",
    "segments",
]

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "everysec", "no")
SYNC_INTERVAL_S = 1.0


class JournalError(StoreUnavailableError):
    """A change could not be written to the journal; it was not applied (503, retry in 1 s)."""

    reason = "journal_failed"
    retry_after = 1


@dataclass
class _Segment:
    """An open segment file: its descriptor, path, size and first lsn."""

    fd: int
    path: Path
    size: int
    first_lsn: int
    dirty_tail: bool = False  # a failed write may have left bytes past ``size``


class Journal:
    """An open journal, appending to a fresh segment; safe across threads.

    ``fsync``: ``always`` fsyncs before :meth:`append` returns (concurrent appends share one
    fsync: group commit); ``everysec`` fsyncs from a background thread at most a second after
    a write; ``no`` leaves it to the OS (and fsyncs at close). Every record is
    written to the OS before ``append`` returns, so a killed process loses nothing in any
    mode; a power cut can lose what was not fsynced. :attr:`health` says whether writes work.
    """

    def __init__(self, directory: Path, next_lsn: int, fsync: str = "everysec") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}")
        self.directory = directory
        self._fsync = fsync
        self._lock = threading.Lock()
        self._next_lsn = next_lsn
        self._retired: list[_Segment] = []  # older segments, not yet fsynced and closed
        self._directory_dirty = True  # a segment was created since the directory's fsync
        self._sync_cond = threading.Condition()
        self._syncing = False
        self._durable_lsn = next_lsn - 1
        self._stop = threading.Event()
        self.health = JournalHealth(directory)
        self._segment: _Segment | None = self._new_segment()
        if fsync != "no":
            threading.Thread(target=self._sync_in_background, name="fsync", daemon=True).start()

    @property
    def next_lsn(self) -> int:
        """The lsn the next record will get."""
        return self._next_lsn

    @property
    def durable_lsn(self) -> int:
        """The highest lsn known fsynced, with its segment's directory entry."""
        return self._durable_lsn

    def _new_segment(self) -> _Segment:
        """Create the segment starting at the next lsn (call under ``_lock``); on failure no
        file is left."""
        path = segment_path(self.directory, self._next_lsn)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            _write_all(fd, MAGIC)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return _Segment(fd, path, len(MAGIC), self._next_lsn)

    def append(
        self,
        kind: str,
        device_id: str,
        sent_at_ns: int | None = None,
        upload_ns: int | None = None,
        key: str | None = None,
        *,
        received_ns: int | None = None,
        detail: str | None = None,
        wait: bool = True,
    ) -> int:
        """Write one change; return its lsn. Raises :class:`JournalError` if it could not be
        written (or, with ``always`` and ``wait``, fsynced): the caller must then not apply it.
        With ``wait=False`` the record is written to the OS and :meth:`wait_durable` waits for
        its fsync, so a caller can release its locks first."""
        with self._lock:
            segment = self._segment
            if segment is None:
                raise JournalError("cannot write the journal: it is closed")
            lsn = self._next_lsn
            data = encode(
                Entry(lsn, kind, device_id, sent_at_ns, upload_ns, key, received_ns, detail)
            )
            try:
                if segment.dirty_tail:
                    _trim(segment)
                _write_all(segment.fd, data)
            except OSError as error:
                _trim(segment, quiet=True)
                raise self._failed("cannot write the journal", error, sync=False) from None
            self._next_lsn = lsn + 1
            segment.size += len(data)
        self.health.wrote()
        if wait:
            self.wait_durable(lsn)
        return lsn

    def wait_durable(self, lsn: int) -> None:
        """Return once record ``lsn`` is as durable as the mode promises: with ``always``,
        fsynced (sharing the next fsync with every waiting writer); otherwise at once. Raises
        :class:`JournalError` if the fsync fails."""
        if self._fsync == "always":
            self._sync(lsn)

    def _failed(self, what: str, error: OSError, *, sync: bool) -> JournalError:
        message = f"{what}: {error.strerror or error}"
        self.health.failed(message, sync=sync)
        return JournalError(message)

    def _sync(self, lsn: int | None) -> None:
        """Return once every record up to ``lsn`` is fsynced, or with ``None`` once one full
        pass (begun after this call) is done. Raises :class:`JournalError` if an fsync fails."""
        with self._sync_cond:
            while lsn is None or self._durable_lsn < lsn:
                if self._syncing:
                    self._sync_cond.wait()
                    continue
                self._syncing = True
                self._sync_cond.release()
                target = -1
                try:
                    target = self._sync_pass()
                finally:
                    self._sync_cond.acquire()
                    self._syncing = False
                    self._durable_lsn = max(self._durable_lsn, target)
                    self._sync_cond.notify_all()
                if lsn is None:
                    return

    def _sync_pass(self) -> int:
        """fsync what is pending (run by the one syncer, no lock held); return the lsn now
        durable."""
        with self._lock:
            target = self._next_lsn - 1
            retired, self._retired = self._retired, []
            directory_dirty, self._directory_dirty = self._directory_dirty, False
            current = self._segment
        try:
            while retired:
                os.fsync(retired[0].fd)
                os.close(retired.pop(0).fd)
            if directory_dirty:
                fsync_directory(self.directory)
                directory_dirty = False
            if current is not None:
                os.fsync(current.fd)
        except OSError as error:
            with self._lock:  # what was not done is pending again
                self._retired[:0] = retired
                self._directory_dirty |= directory_dirty
            raise self._failed("cannot fsync the journal", error, sync=True) from None
        self.health.synced()
        return target

    def _pending(self) -> bool:
        return bool(
            self._durable_lsn < self._next_lsn - 1 or self._retired or self._directory_dirty
        )

    def _sync_in_background(self) -> None:
        """``everysec``: fsync what was written each second. ``always``: fsync and close the
        segments retired by :meth:`rotate` while no write is waiting, and retry a failed
        fsync, so the health recovers without a write."""
        while not self._stop.wait(SYNC_INTERVAL_S):
            if self._pending() or self.health.sync_failing:
                try:
                    self._sync(None)
                except JournalError as error:
                    log.error("background fsync failed: %s", error)

    def rotate(self) -> list[Path]:
        """Start a new segment (unless the current one is still empty); return the older ones
        (for deletion once a snapshot holds everything in them). Never waits for an fsync:
        the syncer fsyncs and closes the old segment. Raises OSError if the new segment
        cannot be created (the current one stays), JournalError once closed."""
        with self._lock:
            current = self._segment
            if current is None:
                raise JournalError("cannot rotate the journal: it is closed")
            path = current.path
            if current.first_lsn < self._next_lsn:
                self._segment = self._new_segment()
                self._directory_dirty = True
                path = self._segment.path
                if self._fsync == "no":  # no syncer: left to the OS (a close is no fsync)
                    os.close(current.fd)
                else:
                    self._retired.append(current)
        return [older for older in segments(self.directory) if older != path]

    def close(self) -> None:
        """fsync and close every segment; later appends raise :class:`JournalError`."""
        self._stop.set()
        with self._lock:
            if self._segment is None:
                return
            self._retired.append(self._segment)
            self._segment = None
        self._sync(None)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _trim(segment: _Segment, *, quiet: bool = False) -> None:
    """Cut whatever a failed write left after the segment's last whole record."""
    try:
        os.ftruncate(segment.fd, segment.size)
    except OSError:
        segment.dirty_tail = True  # tried again before the next write
        if not quiet:
            raise
        log.exception("cannot cut a partial journal write at %d", segment.size)
    else:
        segment.dirty_tail = False
