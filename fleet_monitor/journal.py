"""The journal: every accepted change, appended before its reply, replayed at start-up.

A journal is a directory's ``journal-<first lsn>.log`` segments. Each starts with the 4 bytes
``FMJ1`` (format version 1), then records of ``<payload length: u32 LE> <crc32 of payload: u32
LE> <payload>``, the payload a compact JSON object: ``{"l": lsn, "t": kind, "d": device id,
...}`` with kind ``h`` (heartbeat: ``s`` sent_at ns, ``k`` key or absent), ``u`` (upload:
``s``, ``n`` upload ns, ``k``), ``r`` (device registered) or ``x`` (device removed). Log
sequence numbers (lsn) grow by one per record across segments.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"FMJ1"
_HEADER = struct.Struct("<II")
FSYNC_MODES = ("always", "everysec", "no")
_SEGMENT_PREFIX, _SEGMENT_SUFFIX = "journal-", ".log"


class JournalError(Exception):
    """A change could not be written to the journal; it was not applied."""


class CorruptJournalError(Exception):
    """A journal record in the middle of the journal is damaged; str() names file and offset."""


@dataclass(frozen=True)
class Entry:
    """One journaled change."""

    lsn: int
    kind: str
    device_id: str
    sent_at_ns: int | None = None
    upload_ns: int | None = None
    key: str | None = None


def encode(entry: Entry) -> bytes:
    """The record bytes of ``entry``: length, checksum, JSON payload."""
    fields: dict[str, Any] = {"l": entry.lsn, "t": entry.kind, "d": entry.device_id}
    if entry.sent_at_ns is not None:
        fields["s"] = entry.sent_at_ns
    if entry.upload_ns is not None:
        fields["n"] = entry.upload_ns
    if entry.key is not None:
        fields["k"] = entry.key
    payload = json.dumps(fields, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> Entry:
    fields = json.loads(payload)
    return Entry(
        lsn=fields["l"],
        kind=fields["t"],
        device_id=fields["d"],
        sent_at_ns=fields.get("s"),
        upload_ns=fields.get("n"),
        key=fields.get("k"),
    )


def segments(directory: Path) -> list[Path]:
    """The journal's segments, oldest first."""
    found = directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}")
    return sorted(found, key=lambda path: int(path.name[len(_SEGMENT_PREFIX) : -4]))


def read_segment(path: Path, *, last: bool, repair: bool) -> Iterator[Entry]:
    """The entries of one segment, in order.

    A damaged or incomplete record at the very end of the last segment is a write cut short by
    a crash: it is cut off with a warning. Damage anywhere else raises
    :class:`CorruptJournalError`, or with ``repair`` is cut off (with everything after it in
    this segment) with a warning.
    """
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC:
        if last and len(data) < len(MAGIC) and MAGIC.startswith(data):
            _cut(path, 0, "a torn segment header")
            return
        _damaged(path, 0, "does not start with FMJ1", repair=repair)
        return
    offset = len(MAGIC)
    while offset < len(data):
        problem = _check(data, offset)
        if problem is None:
            length = _HEADER.unpack_from(data, offset)[0]
            payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
            try:
                entry = _decode(payload)
            except (ValueError, KeyError, TypeError):
                problem = "an unreadable payload"
            else:
                yield entry
                offset += _HEADER.size + length
                continue
        at_end = _is_last_record(data, offset)
        if last and at_end:
            _cut(path, offset, problem)
            return
        _damaged(path, offset, problem, repair=repair)
        return


def _check(data: bytes, offset: int) -> str | None:
    if len(data) - offset < _HEADER.size:
        return "an incomplete record header"
    length, crc = _HEADER.unpack_from(data, offset)
    payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
    if len(payload) < length:
        return "an incomplete record"
    if zlib.crc32(payload) != crc:
        return "a checksum mismatch"
    return None


def _is_last_record(data: bytes, offset: int) -> bool:
    """Whether the record at ``offset`` reaches (or would reach) the end of the data."""
    if len(data) - offset < _HEADER.size:
        return True
    length: int = _HEADER.unpack_from(data, offset)[0]
    return offset + _HEADER.size + length >= len(data)


def _cut(path: Path, offset: int, problem: str) -> None:
    size = path.stat().st_size
    log.warning(
        "%s: cut off %d bytes at offset %d (%s): the last write before a crash",
        path,
        size - offset,
        offset,
        problem,
        extra={"fields": {"file": str(path), "offset": offset}},
    )
    os.truncate(path, offset)


def _damaged(path: Path, offset: int, problem: str, *, repair: bool) -> None:
    if not repair:
        raise CorruptJournalError(
            f"{path}: corrupt journal record at offset {offset} ({problem}); "
            "start with --repair to drop it and the rest of this segment"
        )
    _cut(path, offset, f"{problem}, dropped by --repair")


class Journal:
    """An open journal, appending to a fresh segment; safe across threads.

    ``fsync``: ``always`` fsyncs before :meth:`append` returns (concurrent appends share one
    fsync: group commit); ``everysec`` fsyncs from a background thread at most a second after
    a write; ``no`` leaves it to the OS. Every record is written to the OS before ``append``
    returns, so a killed process loses nothing in any mode; a power cut can lose what was not
    fsynced.
    """

    def __init__(self, directory: Path, next_lsn: int, fsync: str = "everysec") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}")
        self.directory = directory
        self._fsync = fsync
        self._lock = threading.Lock()
        self._next_lsn = next_lsn
        self._fd = -1
        self._written = 0  # bytes written to the current segment
        self._durable = 0  # bytes of it known fsynced
        self._sync_cond = threading.Condition()
        self._syncing = False
        self._closed = threading.Event()
        self._open_segment()
        if fsync == "everysec":
            threading.Thread(target=self._sync_every_second, name="fsync", daemon=True).start()

    @property
    def next_lsn(self) -> int:
        """The lsn the next record will get."""
        return self._next_lsn

    def _open_segment(self) -> None:
        path = self.directory / f"{_SEGMENT_PREFIX}{self._next_lsn}{_SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._write_all(MAGIC)
        self._written, self._durable = len(MAGIC), 0
        self._path = path
        _fsync_directory(self.directory)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def append(
        self,
        kind: str,
        device_id: str,
        sent_at_ns: int | None = None,
        upload_ns: int | None = None,
        key: str | None = None,
    ) -> int:
        """Write one change; return its lsn. Raises :class:`JournalError` if it could not be
        written (or, with ``always``, fsynced): the caller must then not apply it."""
        with self._lock:
            lsn = self._next_lsn
            data = encode(Entry(lsn, kind, device_id, sent_at_ns, upload_ns, key))
            try:
                self._write_all(data)
            except OSError as error:
                self._undo_partial_write()
                raise JournalError(f"cannot write the journal: {error.strerror}") from None
            self._next_lsn += 1
            self._written += len(data)
            end = self._written
        if self._fsync == "always":
            self._sync_through(end)
        return lsn

    def _undo_partial_write(self) -> None:
        try:
            os.ftruncate(self._fd, self._written)
        except OSError:
            log.exception("cannot cut a partial journal write at %d", self._written)

    def _sync_through(self, end: int) -> None:
        """Return once the first ``end`` bytes are fsynced; one caller fsyncs for all waiting."""
        with self._sync_cond:
            while self._durable < end:
                if self._syncing:
                    self._sync_cond.wait()
                    continue
                self._syncing = True
                target, fd = self._written, self._fd
                self._sync_cond.release()
                try:
                    os.fsync(fd)
                except OSError as error:
                    raise JournalError(f"cannot fsync the journal: {error.strerror}") from None
                finally:
                    self._sync_cond.acquire()
                    self._syncing = False
                    self._sync_cond.notify_all()
                self._durable = max(self._durable, target)

    def _sync_every_second(self) -> None:
        while not self._closed.wait(1.0):
            if self._durable < self._written:
                try:
                    self._sync_through(self._written)
                except JournalError:
                    log.exception("background fsync failed")

    def rotate(self) -> list[Path]:
        """Start a new segment; return the older ones (for deletion once a snapshot holds
        everything in them)."""
        with self._lock, self._sync_cond:
            self._sync_cond.wait_for(lambda: not self._syncing)  # no fsync on a closed fd
            os.fsync(self._fd)
            os.close(self._fd)
            self._open_segment()
        return [path for path in segments(self.directory) if path != self._path]

    def close(self) -> None:
        """fsync and close the current segment."""
        self._closed.set()
        with self._lock, self._sync_cond:
            self._sync_cond.wait_for(lambda: not self._syncing)
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
