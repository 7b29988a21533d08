"""The journal's files: record encoding, and reading a segment back, damage included.

A journal is a directory's ``journal-<first lsn>.log`` segments. Each starts with the 4 bytes
``FMJ1`` (format version 1), then records of ``<payload length: u32 LE> <crc32 of payload: u32
LE> <payload>``, the payload a compact JSON object: ``{"l": lsn, "t": kind, "d": device id,
...}`` with kind ``h`` (heartbeat: ``s`` sent_at ns, ``k`` key or absent), ``u`` (upload:
``s``, ``n`` upload ns, ``k``), ``r`` (device registered) or ``x`` (device removed). Log
sequence numbers (lsn) grow by one per record across segments.

Damage: every payload starts with ``{"l":`` and JSON escapes every ``"`` inside strings, so
the reader finds the next record after damaged bytes by searching for those 5 bytes and
checking the candidate's length, checksum and lsn (a false match must pass a crc32). Damage
followed by no valid record, at the end of the last segment, is a write cut short by a crash
and is cut off. Any other damage stops the start (:class:`CorruptJournalError`), or with
``repair`` is skipped: the segment is rewritten without it, and the log says what was lost.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("fleet_monitor.journal")

MAGIC = b"FMJ1"
HEADER = struct.Struct("<II")
PAYLOAD_START = b'{"l":'
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
    received_ns: int | None = None  # a heartbeat's receipt (records since issue 15)
    detail: str | None = (
        None  # kind "p": a profile's JSON; "m": a maintenance window's; "n": its id
    )


def encode(entry: Entry) -> bytes:
    """The record bytes of ``entry``: length, checksum, JSON payload."""
    fields: dict[str, Any] = {"l": entry.lsn, "t": entry.kind, "d": entry.device_id}
    if entry.sent_at_ns is not None:
        fields["s"] = entry.sent_at_ns
    if entry.upload_ns is not None:
        fields["n"] = entry.upload_ns
    if entry.key is not None:
        fields["k"] = entry.key
    if entry.received_ns is not None:
        fields["r"] = entry.received_ns
    if entry.detail is not None:
        fields["p"] = entry.detail
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
        received_ns=fields.get("r"),
        detail=fields.get("p"),
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


def next_valid(data: bytes, after: int, after_lsn: int) -> int | None:
    """The offset of the first valid record that starts after ``after`` and has an lsn above
    ``after_lsn``; None when there is none. Only candidates starting ``{"l":`` are checked."""
    position = after + 1 + HEADER.size
    while (found := data.find(PAYLOAD_START, position)) != -1:
        entry, _, _ = record_at(data, found - HEADER.size)
        if entry is not None and entry.lsn > after_lsn:
            return found - HEADER.size
        position = found + 1
    return None


@dataclass(frozen=True)
class Damage:
    """Bytes ``start``..``end`` of a segment that hold no valid record, and what they cost:
    records ``first_lsn``..``last_lsn`` (``last_lsn`` None when unknown)."""

    start: int
    end: int
    problem: str
    first_lsn: int
    last_lsn: int | None

    @property
    def records(self) -> str:
        """How many records the damage held, in words."""
        if self.last_lsn is None:
            return f"records from lsn {self.first_lsn} on"
        count = self.last_lsn - self.first_lsn + 1
        if count <= 0:
            return "no records"
        if count == 1:
            return f"1 record, lsn {self.first_lsn}"
        return f"{count} records, lsn {self.first_lsn} to {self.last_lsn}"


TornTail = Callable[[Path, int, int, str], None]  # (path, offset, size, problem)


def read_segment(
    path: Path,
    *,
    last: bool,
    repair: bool,
    next_lsn: int | None = None,
    on_torn: TornTail | None = None,
) -> Iterator[Entry]:
    """The entries of one segment, in order (see the module's docstring for damage).

    ``next_lsn`` (the next segment's first lsn) only sharpens the report of damage that runs
    to the end of a segment. Raises :class:`CorruptJournalError` naming the file and offset.
    """
    torn = on_torn or _cut  # the torn tail of the last segment: cut off unless told
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC and last and len(data) < len(MAGIC) and MAGIC.startswith(data):
        torn(path, 0, len(data), "a torn segment header")
        return
    prev_lsn = first_lsn(path) - 1
    offset, problem, skipped = len(MAGIC), "", []
    if data[: len(MAGIC)] != MAGIC:
        offset, problem = 0, "does not start with FMJ1"
    while offset < len(data):
        if not problem:
            entry, size, problem = record_at(data, offset)
            if entry is not None:
                yield entry
                prev_lsn, offset = entry.lsn, offset + size
                continue
        resume = next_valid(data, offset, prev_lsn)
        if resume is None and last and offset >= len(MAGIC):
            torn(path, offset, len(data), problem)
            data = data[:offset]
            break
        last_lsn = _lost_through(data, resume, next_lsn)
        damage = Damage(
            offset, len(data) if resume is None else resume, problem, prev_lsn + 1, last_lsn
        )
        if not repair:
            raise CorruptJournalError(_refusal(path, damage, len(data)))
        skipped.append(damage)
        offset, problem = damage.end, ""
    if skipped:
        _rewrite(path, data, skipped)


def _lost_through(data: bytes, resume: int | None, next_lsn: int | None) -> int | None:
    if resume is None:
        return None if next_lsn is None else next_lsn - 1
    entry, _, _ = record_at(data, resume)
    assert entry is not None
    return entry.lsn - 1


def _refusal(path: Path, damage: Damage, size: int) -> str:
    where = f"{path}: corrupt journal record at offset {damage.start} ({damage.problem})"
    if damage.end == size:
        return (
            f"{where}; no valid record follows: start with --repair to drop the rest of this "
            "segment"
        )
    return (
        f"{where}; the next valid record is at offset {damage.end}: start with --repair to "
        f"skip the {damage.end - damage.start} damaged bytes"
    )


def _cut(path: Path, offset: int, size: int, problem: str) -> None:
    log.warning(
        "%s: cut off %d bytes at offset %d (%s): the last write before a crash",
        path,
        size - offset,
        offset,
        problem,
        extra={"fields": {"file": str(path), "offset": offset}},
    )
    os.truncate(path, offset)


def _rewrite(path: Path, data: bytes, skipped: list[Damage]) -> None:
    """Replace the segment by its valid records (atomically), logging each skipped range."""
    kept, start = bytearray(MAGIC), len(MAGIC)
    for damage in skipped:
        kept += data[start : damage.start] if start < damage.start else b""
        start = max(start, damage.end)
        log.warning(
            "%s: --repair skipped %d damaged bytes at offset %d (%s): %s",
            path,
            damage.end - damage.start,
            damage.start,
            damage.problem,
            damage.records,
            extra={"fields": _fields(path, damage)},
        )
    kept += data[start:]
    temporary = path.with_name(path.name + ".repaired")
    with temporary.open("wb") as out:
        out.write(kept)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def _fields(path: Path, damage: Damage) -> dict[str, object]:
    return {
        "file": str(path),
        "offset": damage.start,
        "skipped_bytes": damage.end - damage.start,
        "first_lsn": damage.first_lsn,
        "last_lsn": damage.last_lsn,
    }


def fsync_directory(directory: Path) -> None:
    """fsync a directory, so the files created or renamed in it stay after a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
