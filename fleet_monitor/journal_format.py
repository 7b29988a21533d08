"""The journal's files: record encoding, and reading a segment back, damage included.

A journal is a directory's ``journal-<first lsn>.log`` segments. Each starts with the 4 bytes
``FMJ1`` (format version 1), then records of ``<payload length: u32 LE> <crc32 of payload: u32
LE> <payload>``, the payload a compact JSON object: ``{"l": lsn, "t": kind, "d": device id,
...}`` with kind ``h`` (heartbeat: ``s`` sent_at ns, ``k`` key or absent), ``u`` (upload:
``s``, ``n`` upload ns, ``k``), ``r`` (device registered) or ``x`` (device removed). Log
sequence numbers (lsn) grow by one per record across segments.

A damaged or incomplete record at the very end of the last segment is a write cut short by a
crash and is cut off; damage anywhere else stops the start (:class:`CorruptJournalError`).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("fleet_monitor.journal")

MAGIC = b"FMJ1"
HEADER = struct.Struct("<II")
SEGMENT_PREFIX, SEGMENT_SUFFIX = "journal-", ".log"


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
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


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


def segment_path(directory: Path, first_lsn: int) -> Path:
    """The path of the segment whose first record has ``first_lsn``."""
    return directory / f"{SEGMENT_PREFIX}{first_lsn}{SEGMENT_SUFFIX}"


def first_lsn(path: Path) -> int:
    """The lsn a segment's name says its first record has."""
    return int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])


def segments(directory: Path) -> list[Path]:
    """The journal's segments, oldest first."""
    return sorted(directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"), key=first_lsn)


def record_at(data: bytes, offset: int) -> tuple[Entry | None, int, str]:
    """The entry at ``offset`` and its size in bytes, or None and what is wrong with it."""
    if len(data) - offset < HEADER.size:
        return None, 0, "an incomplete record header"
    length, crc = HEADER.unpack_from(data, offset)
    payload = data[offset + HEADER.size : offset + HEADER.size + length]
    if len(payload) < length:
        return None, 0, "an incomplete record"
    if zlib.crc32(payload) != crc:
        return None, 0, "a checksum mismatch"
    try:
        return _decode(payload), HEADER.size + length, ""
    except (ValueError, KeyError, TypeError):
        return None, 0, "an unreadable payload"


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
        entry, size, problem = record_at(data, offset)
        if entry is not None:
            yield entry
            offset += size
            continue
        if last and _is_last_record(data, offset):
            _cut(path, offset, problem)
            return
        _damaged(path, offset, problem, repair=repair)
        return


def _is_last_record(data: bytes, offset: int) -> bool:
    """Whether the record at ``offset`` reaches (or would reach) the end of the data."""
    if len(data) - offset < HEADER.size:
        return True
    length: int = HEADER.unpack_from(data, offset)[0]
    return offset + HEADER.size + length >= len(data)


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


def fsync_directory(directory: Path) -> None:
    """fsync a directory, so the files created or renamed in it stay after a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
